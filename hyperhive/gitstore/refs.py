"""Ref updates that never overwrite blindly: every write says what it expects to replace."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dulwich.repo import Repo

from hyperhive.errors import ConcurrentUpdate
from hyperhive.gitstore import reflist
from hyperhive.gitstore.cache import RefListings

ZERO = b"0" * 40
DEFAULT_BRANCH = b"main"
MAIN = b"refs/heads/" + DEFAULT_BRANCH  # the branch every hive repo deploys from
T = TypeVar("T")


def read(repo: Repo, ref: bytes) -> bytes | None:
    try:
        return repo.refs[ref]
    except KeyError:
        return None


def create(repo: Repo, ref: bytes, sha: bytes) -> bool:
    """Create `ref` only if it does not exist; False if it already does."""
    return repo.refs.add_if_new(ref, sha)


def cas(repo: Repo, ref: bytes, old: bytes | None, new: bytes) -> None:
    """Move `ref` from `old` (None: must not exist) to `new`, or raise ConcurrentUpdate."""
    done = create(repo, ref, new) if old is None else repo.refs.set_if_equals(ref, old, new)
    if not done:
        now = read(repo, ref)
        raise ConcurrentUpdate(
            f"{ref.decode()} in {repo.path} is {now and now.decode()}, "
            f"expected {old and old.decode()}"
        )


def delete(repo: Repo, ref: bytes, old: bytes) -> None:
    if not repo.refs.remove_if_equals(ref, old):
        raise ConcurrentUpdate(f"{ref.decode()} in {repo.path} changed before it could be deleted")


def under(repo: Repo, prefix: bytes) -> dict[bytes, bytes]:
    """Every ref below `prefix` (loose and packed), keyed by the rest of its name."""
    return dict(repo.refs.as_dict(prefix))


_listings = RefListings()


def listing(control: Path, prefix: bytes, derive: Callable[[dict[bytes, bytes]], T]) -> T:
    """`derive(under(repo, prefix))` of the repo at `control`, computed once while nothing
    below `prefix` changes (listing every loose ref costs a file read and a name check
    each: 13,000 tags took seconds), and without opening the repo when nothing did. The
    result is shared between callers: never change it."""

    def load() -> T:
        return derive(reflist.below(control, prefix))  # what `under` answers, read faster

    return _listings.get(str(control), prefix.decode(), derive, load)
