"""What a runtime records about an agent's deploy: the revision it runs (`deployed.rev`)
and the policy that revision declares (`policy.json`). Both are staged during a build and
replace the deployed ones together, only when the build succeeded."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hyperhive.home import Home
from hyperhive.runtime import policy

REVISION_FILE = "deployed.rev"


def revision_file(home: Home, name: str):
    return home.agent_dir(name) / REVISION_FILE


def deployed_revision(home: Home, name: str) -> str | None:
    path = revision_file(home, name)
    return path.read_text().strip() if path.exists() else None


@contextmanager
def staged(home: Home, name: str, rev: str) -> Iterator[None]:
    """Inside the block the build stages its policy (`policy.write_pending`); on success
    the policy and `rev` are swapped in, on any failure both stagings are dropped."""
    rev_new = revision_file(home, name).with_name(REVISION_FILE + ".new")
    try:
        yield
        rev_new.write_text(rev + "\n")
    except BaseException:
        policy.remove_pending(home, name)
        rev_new.unlink(missing_ok=True)
        raise
    policy.commit_pending(home, name)
    os.replace(rev_new, revision_file(home, name))


def forget(home: Home, name: str) -> None:
    """The agent no longer runs anything: drop its revision and policy."""
    path = revision_file(home, name)
    path.unlink(missing_ok=True)
    path.with_name(REVISION_FILE + ".new").unlink(missing_ok=True)
    policy.remove(home, name)
