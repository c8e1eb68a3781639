"""What a diff page shows beside and around the diff: the file tree of the change with
+/- per file and per directory, the viewed-file marks of the operator (hyperhive.viewed),
and where the context between hunks can be expanded (`gaps`).

Templates reach these as globals (`file_tree`, `viewed_marks`, `gaps`, `viewed_key`), so a
view that renders `_diff.html` needs no change for them; a mark is set through
`views/viewed.py`."""

from dataclasses import dataclass, field

from flask import Flask, g

from forge_ui.context import hive
from forge_ui.diffview import FileDiff
from hyperhive import viewed


@dataclass
class Node:
    name: str  # a directory's path part(s) (single-child chains joined), or a file's name
    index: int | None = None  # a file: its place on the page (1-based, as #file-N)
    file: FileDiff | None = None
    children: list["Node"] = field(default_factory=list)
    added: int = 0
    removed: int = 0


def file_tree(files: list[FileDiff]) -> list[Node]:
    """The changed files as a tree in page order; a directory sums its files' +/-, and a
    directory with one subdirectory and no files folds into it (`a/b/c`), as GitHub does."""
    root = Node("")
    for i, f in enumerate(files, start=1):
        parts = f.path.split("/")
        node = root
        for part in parts[:-1]:
            child = next((c for c in node.children if c.file is None and c.name == part), None)
            if child is None:
                child = Node(part)
                node.children.append(child)
            node = child
        node.children.append(Node(parts[-1], index=i, file=f))
    _sum(root)
    return [_fold(c) for c in root.children]


def _sum(node: Node) -> None:
    if node.file is not None:
        node.added, node.removed = node.file.added, node.file.removed
        return
    for c in node.children:
        _sum(c)
    node.added = sum(c.added for c in node.children)
    node.removed = sum(c.removed for c in node.children)


def _fold(node: Node) -> Node:
    while node.file is None and len(node.children) == 1 and node.children[0].file is None:
        only = node.children[0]
        node = Node(
            f"{node.name}/{only.name}",
            children=only.children,
            added=node.added,
            removed=node.removed,
        )
    node.children = [_fold(c) for c in node.children]
    return node


@dataclass
class Gap:
    """Unchanged lines not shown before hunk `before` (len(hunks): after the last one),
    which the page can load: new-side lines `start`..`end`, the first being old line
    `old_start` (unchanged lines have the same text on both sides)."""

    before: int
    start: int
    end: int
    old_start: int

    @property
    def count(self) -> int:
        return self.end - self.start + 1


def gaps(f: FileDiff) -> dict[int, Gap]:
    """Where context can be expanded in a file shown with hunks: before each hunk, and
    after the last when the new side's length is known and no hunk was cut by a budget."""
    if f.status in ("added", "deleted") or not f.hunks or f.binary or not f.new_sha:
        return {}
    out: dict[int, Gap] = {}
    new_end = old_end = 0  # the last line shown on each side
    for k, h in enumerate(f.hunks):
        new_first = h.new_start if h.new_len else h.new_start + 1
        old_first = h.old_start if h.old_len else h.old_start + 1
        if new_first - 1 > new_end:
            out[k] = Gap(k, new_end + 1, new_first - 1, old_end + 1)
        new_end, old_end = new_first + h.new_len - 1, old_first + h.old_len - 1
    if f.new_lines is not None and f.new_lines > new_end and not f.hidden:
        out[len(f.hunks)] = Gap(len(f.hunks), new_end + 1, f.new_lines, old_end + 1)
    return out


def viewed_key(f: FileDiff) -> str:
    return viewed.sides(f.old_sha, f.new_sha)


def viewed_marks(files: list[FileDiff]) -> set[int]:
    """The page indexes (1-based) of the files this operator marked viewed."""
    if not getattr(g, "actor", None) or not files:
        return set()
    keys = [(f.path, viewed_key(f)) for f in files]
    found = viewed.marked(hive().home, g.actor, keys)
    return {i for i, key in enumerate(keys, start=1) if key in found}


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        file_tree=file_tree, viewed_marks=viewed_marks, gaps=gaps, viewed_key=viewed_key
    )
