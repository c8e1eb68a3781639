"""A harness that ends with the process that started it, even one that died first.

The starter (the local runtime, runtime/local_harness.py) holds the write end of one pipe
for as long as it lives and hands the read end to each harness it starts
(`hyperhive harness --exit-with-parent --lifeline FD`); nobody ever writes to it. The
kernel closes the write end when the starter exits, however it exits (a SIGKILL too), so
the harness's read returns end-of-file: at once when the starter died before the harness
even ran, which is what reading `os.getppid()` at the harness's start could not tell (it
named init, or a subreaper, by then). The read end also goes through a sandbox wrapper
(bubblewrap keeps inherited descriptors for the program it runs) and across pid
namespaces, where a parent pid given by the starter would name another process or none.

Why not only `PR_SET_PDEATHSIG`: the kernel sends it when the *thread* that forked the
child exits (prctl(2)), and the daemon starts harnesses from its scheduler's pool threads,
which end at its stop before the harnesses are stopped: each would look like a crash. It
is what a harness started with `--exit-with-parent` and no lifeline (by hand, by another
starter) uses, set first thing and followed by a look at the parent pid, so a parent that
died before the prctl is caught too when init (pid 1) adopted the harness.
"""

import ctypes
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable

log = logging.getLogger("hyperhive.harness")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_lock = threading.Lock()
_pipe: tuple[int, int, int] | None = None  # (the pid that made it, read end, write end)


def read_end() -> int:
    """The read end for a harness this process starts (pass it with `pass_fds`). One pipe
    per process, made at the first call; both ends close-on-exec, so only the children it
    is passed to get it, and no child ever gets the write end."""
    global _pipe
    with _lock:
        if _pipe is None or _pipe[0] != os.getpid():  # made before a fork: not ours
            r, w = os.pipe2(os.O_CLOEXEC)
            _pipe = (os.getpid(), r, w)
        return _pipe[1]


def check(fd: int) -> None:
    """`fd` is an open pipe (what `--lifeline` must name); ValueError otherwise."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise ValueError(f"--lifeline {fd} is not an open file descriptor ({e.strerror})") from None
    if not stat.S_ISFIFO(mode):
        raise ValueError(f"--lifeline {fd} is not a pipe")


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """PR_SET_PDEATHSIG: `sig` when the thread that forked this process ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def follow(fd: int | None, gone: Callable[[], None]) -> None:
    """Call `gone` (from a daemon thread, or right here) once the starter is gone: the
    lifeline `fd` reads end-of-file, or, without one, the parent death signal or init as
    the parent already."""
    if fd is None:
        set_parent_death_signal()
        if os.getppid() == 1:
            gone()
        return
    check(fd)

    def wait() -> None:
        while True:
            try:
                if not os.read(fd, 4096):
                    break
            except OSError as e:
                log.error("the lifeline broke (%s): taking the starter for gone", e)
                break
        gone()

    threading.Thread(target=wait, name="lifeline", daemon=True).start()
