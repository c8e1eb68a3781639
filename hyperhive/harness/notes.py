"""The agent's durable memory, `notes.md` in its state directory, and its compaction.

When the notes grow past a threshold, a short secondary `claude` session (no tools, no
history) gets them with the instruction below and answers with the compacted text; the
harness keeps the old version as `notes.md.<UTC timestamp>.bak` and swaps the new one in
atomically. A session that fails or answers nothing leaves the notes as they were.
"""

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("hyperhive.harness")

NOTES_FILE = "notes.md"
DEFAULT_COMPACT_BYTES = 32 * 1024

INSTRUCTION = """\
Below, between <notes> and </notes>, are an agent's durable notes: its memory across \
sessions. They have grown too long. Compact them: keep every fact that still matters \
(names, decisions and their reasons, open tasks, promises made, paths, commands that \
worked, what the agent learned not to do), drop what is obsolete or repeated, merge \
duplicates, prefer short lists. Answer with the compacted notes only, in Markdown, \
nothing before or after them.
"""

# (prompt) -> the compacted notes, or None when the session failed
Session = Callable[[str], str | None]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def compaction_prompt(notes: str) -> str:
    return f"{INSTRUCTION}\n<notes>\n{notes}\n</notes>\n"


def compact(path: Path, session: Session, now: float | None = None) -> Path | None:
    """Compact the notes at `path` with `session`; the backup written, or None when the
    notes stayed as they were (the session failed or answered nothing)."""
    before = path.read_bytes()
    answer = session(compaction_prompt(before.decode(errors="replace")))
    if answer is None or not answer.strip():
        log.warning("notes compaction failed: %s left as it was", path)
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():  # two compactions within one second
        backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    new = path.with_name(path.name + ".new")
    try:
        backup.write_bytes(before)
        new.write_text(answer.strip() + "\n")
        os.replace(new, path)
    except OSError as e:  # a full or read-only disk: the harness goes on, the notes stay
        log.warning("notes compaction failed: %s left as it was (%s)", path, e)
        return None
    log.info(
        "notes compacted: %d → %d bytes; the old notes are in %s", len(before), size(path), backup
    )
    return backup
