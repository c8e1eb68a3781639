"""Which trees a commit may carry into the hive: git's object format allows shapes that
a checkout turns into writes outside the work tree.

Refused, wherever a commit enters (a push, a proposal, a deploy's checkout):

- an entry name that is empty, holds `/` or NUL, is `.` or `..`, or is `.git` in any case
  (and dulwich's other spellings of it): `e/x` beside a symlink `e -> /elsewhere` writes
  `/elsewhere/x`;
- a symlink whose target is empty, absolute, holds NUL, is longer than PATH_MAX, or leads
  out of the tree — resolved through the tree's own symlinks, as the kernel would (`d ->
  .` makes `d/x/../..` the tree's parent), loops included;
- a symlinked top-level `agent.nix`: the agent's declaration is a file of its own;
- two entries of one name in a tree (which a checkout writes twice).

Checks read the trees only, never the blobs of regular files, so they cost a walk.
"""

from collections import deque
from dataclasses import dataclass

from dulwich.index import validate_path_element_default
from dulwich.object_store import BaseObjectStore
from dulwich.objects import S_ISGITLINK, Tree

S_IFLNK = 0o120000
S_IFDIR = 0o040000
AGENT_NIX = b"agent.nix"
MAX_LINK = 4096  # PATH_MAX: a longer target is no path
MAX_HOPS = 40  # the kernel's limit on symlinks followed in one lookup (ELOOP)


@dataclass(frozen=True)
class Unsafe:
    """Why a tree is refused: `path` (as far as it could be named) and what is wrong."""

    path: str
    why: str

    def __str__(self) -> str:
        return f"{self.path!r}: {self.why}"


def bad_name(name: bytes) -> str | None:
    """Why one entry name cannot be checked out, if it cannot."""
    if not name:
        return "an empty name"
    if b"/" in name:
        return "a name with '/'"
    if b"\0" in name:
        return "a name with NUL"
    if name in (b".", b".."):
        return f"the name {name.decode()!r}"
    if name.lower() == b".git" or not validate_path_element_default(name):
        return "a name git reserves (.git)"
    return None


def escapes(links: dict[bytes, bytes], link: bytes, target: bytes) -> str | None:
    """Why the symlink `link -> target` leads out of the tree, if it does: its target
    resolved component by component, through the tree's other symlinks."""
    stack = link.split(b"/")[:-1]
    todo = deque(target.split(b"/"))
    hops = 0
    while todo:
        part = todo.popleft()
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not stack:
                return "a symlink that leads out of the tree"
            stack.pop()
            continue
        stack.append(part)
        inner = links.get(b"/".join(stack))
        if inner is not None:
            hops += 1
            if hops > MAX_HOPS:
                return "a symlink loop"
            stack.pop()
            if inner.startswith(b"/"):
                return "a symlink that leads out of the tree (through an absolute one)"
            todo.extendleft(reversed(inner.split(b"/")))
    return None


def unsafe_tree(objects: BaseObjectStore, tree_id: bytes) -> Unsafe | None:
    """The first reason the tree `tree_id` may not be checked out, or None."""
    links: dict[bytes, bytes] = {}
    todo = [(b"", tree_id)]
    while todo:
        prefix, sha = todo.pop()
        tree = objects[sha]
        if not isinstance(tree, Tree):
            return Unsafe(prefix.decode(errors="replace"), "a tree entry that is not a tree")
        seen: set[bytes] = set()
        for entry in tree.iteritems():
            path = prefix + entry.path
            shown = path.decode(errors="replace")
            if why := bad_name(entry.path):
                return Unsafe(shown, why)
            if entry.path in seen:
                return Unsafe(shown, "a name given twice in one tree")
            seen.add(entry.path)
            if entry.mode == S_IFDIR:
                todo.append((path + b"/", entry.sha))
            elif entry.mode == S_IFLNK:
                if path == AGENT_NIX:
                    return Unsafe(shown, "agent.nix may not be a symlink")
                target = objects[entry.sha].as_raw_string()
                if not target or len(target) > MAX_LINK or b"\0" in target:
                    return Unsafe(shown, "a symlink without a usable target")
                if target.startswith(b"/"):
                    return Unsafe(shown, "a symlink to an absolute path")
                links[path] = target
            elif not (S_ISGITLINK(entry.mode) or entry.mode in (0o100644, 0o100755, 0o100664)):
                return Unsafe(shown, f"an entry of mode {entry.mode:o}")
    for link, target in links.items():
        if why := escapes(links, link, target):
            return Unsafe(link.decode(errors="replace"), why)
    return None
