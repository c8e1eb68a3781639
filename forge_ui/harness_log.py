"""An agent's harness log in the forge (`logs/<name>/harness.log`, the local runtime's):
its tail on the agent page, then followed live over `/ws/harness/<name>` (live.py), as
a build log is, across the rotation a harness start may do (runtime/local_harness.py)."""

import os
from dataclasses import dataclass
from pathlib import Path

from forge_ui.context import hive

TAIL_BYTES = 64 * 1024  # what the page starts with
CHUNK = 64 * 1024  # what one websocket message carries at most


def path_of(name: str) -> Path:
    return hive().home.log_dir(name) / "harness.log"


def tail(path: Path, size: int | None = None) -> tuple[str, int]:
    """The log's last `size` (TAIL_BYTES) bytes from a line start, and the offset it
    ends at."""
    size = TAIL_BYTES if size is None else size
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = max(0, end - size)
            f.seek(start)
            data = f.read(end - start)
    except FileNotFoundError:
        return "", 0
    if start:  # from the first whole line
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return data.decode(errors="replace"), end


@dataclass
class Follower:
    """Reads what a log gains from `offset` on, whole lines at a time; a log replaced
    (rotated: another file under the name) or cut shorter is read again from its start."""

    path: Path
    offset: int
    inode: int | None = None

    def read(self) -> tuple[str, bool]:
        """(new text, whether the log started over)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return "", False
        reset = (self.inode is not None and st.st_ino != self.inode) or st.st_size < self.offset
        if reset:
            self.offset = 0
        self.inode = st.st_ino
        if st.st_size <= self.offset:
            return "", reset
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read(CHUNK)
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) == CHUNK:  # one line longer than a chunk: cut it
            end = len(chunk)
        self.offset += end
        return chunk[:end].decode(errors="replace"), reset
