"""Process-wide caches of what git objects and settled refs say.

Objects never change (their id is their content), so what is parsed from one is kept by
id. A listing of refs is kept while the directories that hold them and `packed-refs` are
unchanged, and only once they have been unchanged for a while: a directory's mtime moves
in coarse steps, so a write in the same step as the listing would not show (git's
"racily clean" problem, solved the same way)."""

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SETTLED_NS = 2_000_000_000  # a stamp this old cannot hide a write made after it was read


class LRU(Generic[K, V]):
    """At most `size` entries, the least recently used dropped first; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class SizedLRU(Generic[K, V]):
    """At most `max_bytes` of values by their given weight (and `size` entries), the least
    recently used dropped first; a value heavier than a quarter of the bound is not kept
    (one huge page must not push out every other); thread-safe."""

    def __init__(self, max_bytes: int, size: int = 4096):
        self.max_bytes, self.size = max_bytes, size
        self.weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V, weight: int) -> bool:
        """Keep `value`; False when it weighs too much to be kept."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            if weight > self.max_bytes // 4:
                return False
            self._items[key] = (value, weight)
            self.weight += weight
            while self.weight > self.max_bytes or len(self._items) > self.size:
                _, (_, dropped) = self._items.popitem(last=False)
                self.weight -= dropped
            return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0

    def __len__(self) -> int:
        return len(self._items)


Stamp = tuple[tuple[str, int, int, int], ...]


def stamp(control: str, prefix: str) -> tuple[Stamp, bool]:
    """The state of the refs below `prefix` on disk: `packed-refs` and every directory
    under `<control>/<prefix>` (mtime, inode, size), and whether all of it is settled
    (unchanged for SETTLED_NS)."""
    entries = []
    links = 0
    for path in (os.path.join(control, "packed-refs"), os.path.join(control, prefix)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            entries.append((path, 0, 0, 0))
        else:
            entries.append((path, st.st_mtime_ns, st.st_ino, st.st_size))
            links = st.st_nlink
    # A directory holding no directories has two links on the file systems that count
    # them (ext4, xfs, tmpfs): its files need not be listed, which is most of the cost
    # (the top one's neither: refs/heads/ holds `main` alone).
    top = entries[-1]
    todo = [top[0]] if top[1] and links != 2 else []
    while todo:
        try:
            with os.scandir(todo.pop()) as found:
                for entry in found:
                    if entry.is_dir(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        entries.append((entry.path, st.st_mtime_ns, st.st_ino, 0))
                        if st.st_nlink != 2:
                            todo.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    newest = max(e[1] for e in entries)
    return tuple(sorted(entries)), time.time_ns() - newest > SETTLED_NS


class RefListings:
    """What is derived from the refs below a prefix, per repo and derivation, reused while
    their stamp holds."""

    def __init__(self, size: int = 4096):
        self._cache: LRU[tuple[str, str, Callable], tuple[Stamp, object]] = LRU(size)

    def get(self, control: str, prefix: str, derive: Callable, load: Callable[[], V]) -> V:
        key = (control, prefix, derive)
        memo = _once.get()
        if memo is not None and key in memo:
            return memo[key]  # type: ignore[return-value]
        now, settled = stamp(control, prefix)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == now:
            value = cached[1]
        else:
            value = load()
            if settled:
                self._cache.put(key, (now, value))
        if memo is not None:
            memo[key] = value
        return value  # type: ignore[return-value]


# The listings read so far inside `listed_once()`, in this thread (or task).
_once: ContextVar[dict | None] = ContextVar("hyperhive_listed_once", default=None)


@contextmanager
def listed_once() -> Iterator[None]:
    """Inside the block each listing is read once: the first read of a repo's refs below a
    prefix answers every later one (no stamp taken again), so a request that asks about
    many approvals of one repo (the dashboard asks for each its check, its policy diff's
    base, …) sees one consistent view at the cost of one look. Nested blocks share the
    outer one. Never around something that must see its own writes, nor a long-lived
    loop (a websocket): the block's view does not move."""
    if _once.get() is not None:
        yield
        return
    token = _once.set({})
    try:
        yield
    finally:
        _once.reset(token)
