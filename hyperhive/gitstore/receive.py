"""Receiving a push the way git's own receive-pack does, on dulwich's server side.

Push options (`git push -o key=value`, git's `push-options` capability) are read after
the commands, before the pack, within limits of number and size, and handed to the
caller's `Rules`; the pre-receive hook sees them as git's own does (`GIT_PUSH_OPTION_COUNT`,
`GIT_PUSH_OPTION_<i>`).

The pack goes into a quarantine object directory inside the repo
(`objects/tmp_objdir-incoming-*`), checked on the way by packscan (its size, each object's
and their inflated total) and indexed by `git index-pack --strict` (gitstore/indexpack.py:
ids hashed, objects parsed, thin packs completed from the repo, every object a pushed one
names present). Then every pushed tip must be there, every ref update must pass the
caller's `Rules`, and the repo's own
`hooks/pre-receive` runs with git's contract (`<old> <new> <ref>` lines on stdin, the
quarantine visible through `GIT_OBJECT_DIRECTORY`) — the place an operator adds checks.
Only when the whole push is accepted do the objects move into the repo and `Rules.apply`
moves refs. A push that is refused, too large or malformed leaves nothing behind: the
quarantine is deleted whatever happens.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dulwich.errors import GitProtocolError
from dulwich.object_store import DiskObjectStore, PackInputTooLarge
from dulwich.protocol import (
    CAPABILITY_PUSH_OPTIONS,
    CAPABILITY_SIDE_BAND_64K,
    SIDE_BAND_CHANNEL_PROGRESS,
)
from dulwich.repo import Repo
from dulwich.server import ReceivePackHandler

from hyperhive.errors import disk_full
from hyperhive.gitstore import gitcli, refs
from hyperhive.gitstore.indexpack import IndexFailed, PackIndexer
from hyperhive.gitstore.packscan import PackLimit, scan_pack
from hyperhive.gitstore.refs import ZERO

log = logging.getLogger("hyperhive.git")

ATOMIC = b"atomic push failure"
MAX_LINE = 4096  # git's status for the accepted refs of a refused push
MAX_PUSH_OPTIONS = 32
MAX_PUSH_OPTION_BYTES = 4096
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Command:
    """One ref update the client asked for."""

    old: bytes
    new: bytes
    ref: bytes

    @property
    def deleting(self) -> bool:
        return self.new == ZERO

    @property
    def line(self) -> bytes:
        return b"%s %s %s\n" % (self.old, self.new, self.ref)


class Refused(Exception):
    """A ref update declined: `reason` is git's short `ng` status, shown in parentheses
    after `[remote rejected]`; `message` explains, on the client's `remote:` lines."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Rules(Protocol):
    def check_options(self, options: list[str], commands: list[Command]) -> None:
        """Raise Refused if the push options (`git push -o`, each checked for size and
        UTF-8 already) are not understood; nothing is written yet."""

    def check(self, command: Command, objects: DiskObjectStore) -> None:
        """Raise Refused if the update may not happen; nothing is written yet. `objects`
        holds the repo's objects and the pushed ones."""

    def hook_env(self) -> dict[str, str]:
        """Extra environment for the repo's pre-receive hook."""

    def apply(self, commands: list[Command], say: Callable[[str], None]) -> dict[bytes, Refused]:
        """Make the accepted updates (the pushed objects are in the repo now), all or
        none: if one fails after all (a ref moved since the check), none is made, and the
        failure is returned by ref (the others are reported as git's atomic failure)."""


@dataclass(frozen=True)
class Limits:
    """What one push may hold (the [git] settings)."""

    pack_bytes: int  # git.max_push_bytes: the pack as sent
    object_bytes: int  # git.max_object_bytes: each object, inflated
    inflated_bytes: int  # git.max_push_inflated_bytes: all of them, inflated


QUARANTINE_PREFIX = "tmp_objdir-incoming-"
MIGRATED_PREFIX = "hyperhive-migrated-"


def _reached(git_dir: Path, tips: dict[str, str]) -> bool:
    """Whether a ref of the repo is at or past the tip a push was to give it."""
    repo = Repo(str(git_dir))
    try:
        for ref, tip in tips.items():
            now = refs.read(repo, ref.encode())
            known = now is not None and tip.encode() in repo.object_store
            if known and gitcli.is_ancestor(repo.object_store, tip.encode(), now):
                return True
        return False
    finally:
        repo.close()


class Quarantine:
    """A temporary object directory inside `target` for one push; removed on exit."""

    @staticmethod
    def sweep(objects_dir: Path) -> list[Path]:
        """Remove what pushes cut off by a killed daemon left behind (call it before any
        push is served); what was removed: quarantines, and the packs of a push killed
        between moving its packs in and moving its refs (`migrate`'s record still there)
        when no ref of the repo reaches any tip the push was to set."""
        left = sorted(objects_dir.glob(f"{QUARANTINE_PREFIX}*"))
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
        for record in sorted(objects_dir.glob(f"{MIGRATED_PREFIX}*.json")):
            try:
                data = json.loads(record.read_text())
                packs, tips = list(data["packs"]), dict(data["refs"])
            except (OSError, ValueError, KeyError, TypeError):
                packs, tips = [], {}  # cut while written: nothing had moved yet
            if packs and not _reached(objects_dir.parent, tips):
                for name in packs:
                    path = objects_dir / "pack" / Path(name).name
                    if path.exists():
                        path.unlink()
                        left.append(path)
            record.unlink()
        return left

    def __init__(self, target: DiskObjectStore):
        self.target = target
        self.path = Path(tempfile.mkdtemp(prefix=QUARANTINE_PREFIX, dir=target.path))
        (self.path / "pack").mkdir()
        (self.path / "info").mkdir()
        self.objects = DiskObjectStore(
            str(self.path), alternates=[target.path], object_format=target.object_format
        )

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, *exc) -> None:
        self.objects.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def receive(self, read, read_some, limits: "Limits") -> None:
        """The pack, checked by packscan as it arrives and indexed by git meanwhile."""
        git_dir = Path(self.target.path).parent
        alternates = [Path(self.target.path)]
        with PackIndexer(git_dir, self.path, alternates, limits.pack_bytes) as indexer:
            scan_pack(
                read_some or read,
                indexer,
                max_bytes=limits.pack_bytes,
                max_object=limits.object_bytes,
                max_total=limits.inflated_bytes,
            )
            name = indexer.finish()
        pack = self.path / "pack" / f"pack-{name}.pack"
        with pack.open("rb") as f:
            empty = f.read(12)[8:] == bytes(4)
        if empty:  # nothing new (a push of known commits): no pack to keep
            for path in pack.parent.glob(f"pack-{name}.*"):
                path.unlink()

    def check_tip(self, tip: bytes) -> None:
        """`tip` came with the push or is in the repo: what it reaches is then too (git
        checked that each pushed object's are, and a stored object's are)."""
        if tip not in self.objects:
            raise Refused("missing objects", f"the push lacks object {tip.decode()}, its tip")

    def migrate(self, tips: dict[bytes, bytes]) -> Path:
        """Move the received packs into the repo, each index after its pack: readers find
        a pack by its index, so none sees a half-moved one. A record of the move (the
        packs, and the tip each ref is to get) is written first and stays until the refs
        have moved (`settled`): one a crash left is the next start's to sweep. Returns it."""
        self.objects.close()
        source = self.path / "pack"
        names = sorted(os.listdir(source), key=lambda n: n.endswith(".idx"))
        record = Path(self.target.path) / f"{MIGRATED_PREFIX}{self.path.name}.json"
        text = json.dumps(
            {"packs": names, "refs": {r.decode(): t.decode() for r, t in tips.items()}}
        )
        tmp = record.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, record)
        for name in names:
            os.replace(source / name, Path(self.target.pack_dir) / name)
        return record


class QuarantinedReceivePack(ReceivePackHandler):
    """dulwich's receive-pack with git's quarantine, all-or-nothing updates, `Rules` and
    the repo's pre-receive hook run on the received objects."""

    def __init__(
        self,
        backend,
        args,
        proto,
        stateless_rpc: bool = False,
        advertise_refs: bool = False,
        *,
        rules: Rules,
        limits: Limits,
    ):
        super().__init__(backend, args, proto, stateless_rpc, advertise_refs)
        self.rules = rules
        self.limits = limits
        self.options: list[str] = []  # the push options, once read and checked
        # dulwich runs the repo's hook files at its own points (pre-receive before the pack
        # has arrived); ours runs on the quarantine instead, as git does.
        self.repo.hooks = {}

    def capabilities(self) -> list[bytes]:
        return [*super().capabilities(), CAPABILITY_PUSH_OPTIONS]

    def say(self, text: str) -> None:
        """Lines the client prints as `remote: …`."""
        if self._client_capabilities is not None and self.has_capability(CAPABILITY_SIDE_BAND_64K):
            for line in text.splitlines():  # each line one packet, well under its 64 KiB
                data = line.encode()[:MAX_LINE] + b"\n"
                self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, data)

    def _report(
        self, commands, unpack: bytes, refused: dict[bytes, Refused], rest: bytes = ATOMIC
    ) -> list:
        """The status of each command: its refusal's reason (each message said once), else
        `rest` (`ok` once applied; git's atomic failure while anything is refused)."""
        for message in dict.fromkeys(r.message for r in refused.values()):
            self.say(message)
        return [(b"unpack", unpack)] + [
            (c.ref, refused[c.ref].reason.encode() if c.ref in refused else rest) for c in commands
        ]

    def _receive(self, q: Quarantine) -> None:
        try:
            q.receive(self.proto.read, getattr(self.proto, "recv", None), self.limits)
        except PackInputTooLarge:
            raise Refused(
                "push too large",
                f"push refused: the pack is larger than {self.limits.pack_bytes} bytes "
                "(git.max_push_bytes in hyperhive.toml)",
            ) from None
        except PackLimit as e:
            raise Refused(
                "object too large" if e.key == "git.max_object_bytes" else "push too large",
                f"push refused: {e} ({e.key} in hyperhive.toml)",
            ) from None
        except IndexFailed as e:
            log.warning("%s: pack refused by git index-pack: %s", self.repo.path, e)
            raise Refused(e.reason, f"push refused: {e}") from None
        except Exception as e:  # the client's bytes: failing to read them is a refusal
            if full := disk_full(e):  # or the hive's disk: say which
                raise Refused("disk full", f"push refused: {full}") from None
            log.warning("%s: unreadable pack refused: %r", self.repo.path, e)
            raise Refused("unreadable pack", f"push refused: unreadable pack: {e}") from None

    def _read_options(self) -> list[bytes]:
        """The push options the client sends between its commands and its pack (pkt-lines
        up to a flush, only when it asked for `push-options`). Reading goes on to the flush
        whatever their number, so the pack that follows is read in step (the request's
        size limit bounds it); more than MAX_PUSH_OPTIONS are not kept."""
        if not self.has_capability(CAPABILITY_PUSH_OPTIONS):
            return []
        options: list[bytes] = []
        try:
            while (line := self.proto.read_pkt_line()) is not None:
                if len(options) <= MAX_PUSH_OPTIONS:
                    options.append(line.removesuffix(b"\n"))
        except GitProtocolError as e:
            raise Refused("unreadable push options", f"push refused: {e}") from None
        return options

    @staticmethod
    def _check_options(options: list[bytes]) -> list[str]:
        if len(options) > MAX_PUSH_OPTIONS:
            raise Refused(
                "too many push options", f"push refused: more than {MAX_PUSH_OPTIONS} push options"
            )
        checked = []
        for option in options:
            head = option[:40].decode(errors="replace")
            if len(option) > MAX_PUSH_OPTION_BYTES:
                raise Refused(
                    "push option too long",
                    f"push refused: push option {head!r}… is {len(option)} bytes, "
                    f"the limit is {MAX_PUSH_OPTION_BYTES}",
                )
            try:
                text = option.decode()
            except UnicodeDecodeError:
                text = None
            if text is None or CONTROL_RE.search(text):  # git's: visible characters, spaces
                raise Refused(
                    "malformed push option",
                    f"push refused: push option {head!r} is not UTF-8 text without control "
                    "characters",
                )
            checked.append(text)
        return checked

    def _apply_pack(self, refs) -> list[tuple[bytes, bytes]]:
        commands = [Command(*r) for r in refs]
        try:
            return self._apply_commands(commands)
        except OSError as e:  # the quarantine or the move of the packs: nothing moved
            if (full := disk_full(e)) is None:
                raise
            refused = Refused("disk full", f"push refused: {full}")
            return self._report(commands, b"ok", dict.fromkeys((c.ref for c in commands), refused))

    def _apply_commands(self, commands: list[Command]) -> list[tuple[bytes, bytes]]:
        every = dict.fromkeys(c.ref for c in commands)
        try:
            raw_options = self._read_options()
        except Refused as r:  # out of step with the client: no pack can be read
            return self._report(commands, r.reason.encode(), dict.fromkeys(every, r))
        with Quarantine(self.repo.object_store) as q:
            if not all(c.deleting for c in commands):
                try:
                    self._receive(q)
                except Refused as r:
                    return self._report(commands, r.reason.encode(), dict.fromkeys(every, r))
            try:  # after the pack, as for any refusal: the client reads its report in step
                self.options = self._check_options(raw_options)
                self.rules.check_options(self.options, commands)
            except Refused as r:
                return self._report(commands, b"ok", dict.fromkeys(every, r))
            refused = {}
            for c in commands:
                try:
                    if not c.deleting:
                        q.check_tip(c.new)
                    self.rules.check(c, q.objects)
                except Refused as r:
                    refused[c.ref] = r
            if not refused:
                try:
                    self._pre_receive(commands, q)
                except Refused as r:
                    refused = {c.ref: r for c in commands}
            if refused:
                return self._report(commands, b"ok", refused)
            record = q.migrate({c.ref: c.new for c in commands if not c.deleting})
        try:
            failed = self.rules.apply(commands, self.say)  # all or nothing
        finally:
            record.unlink()  # settled: what the packs hold is referenced or harmless
        return self._report(commands, b"ok", failed, ATOMIC if failed else b"ok")

    def _pre_receive(self, commands: list[Command], q: Quarantine) -> None:
        control = self.repo.controldir()
        hook = Path(control) / "hooks" / "pre-receive"
        if not os.access(hook, os.X_OK):
            return
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_PUSH_OPTION_")},
            **self.rules.hook_env(),
            "GIT_PUSH_OPTION_COUNT": str(len(self.options)),
            **{f"GIT_PUSH_OPTION_{i}": option for i, option in enumerate(self.options)},
            "GIT_DIR": control,
            "GIT_OBJECT_DIRECTORY": str(q.path),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": self.repo.object_store.path,
            "GIT_QUARANTINE_PATH": str(q.path),
        }
        proc = subprocess.run(
            [str(hook)],
            cwd=control,
            env=env,
            input=b"".join(c.line for c in commands),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.say(proc.stdout.decode(errors="replace"))
        if proc.returncode != 0:
            raise Refused(
                "pre-receive hook declined", f"push refused: pre-receive exited {proc.returncode}"
            )
