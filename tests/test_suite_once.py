"""support/once.py: what the run's processes share is made once, by the first to ask."""

import threading
import uuid

import pytest
from support.once import once_per_run


def test_made_once_for_every_asker_and_again_after_a_failure(request):
    name = f"probe-{uuid.uuid4().hex}"  # this run's directory is shared: a name of its own
    made, got = [], []
    start = threading.Barrier(4)

    def make(directory):
        made.append(directory)
        (directory / "thing").write_text("built")

    def ask():
        start.wait()  # all four at once: flock serializes them (one open file each)
        got.append(once_per_run(request.config, name, make))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(made) == 1 and got == made * 4
    assert (got[0] / "thing").read_text() == "built"

    def broken(directory):
        (directory / "half").write_text("")
        raise RuntimeError("the build failed")

    other = f"{name}-broken"
    with pytest.raises(RuntimeError, match="the build failed"):
        once_per_run(request.config, other, broken)
    again = once_per_run(request.config, other, make)  # tried again, from an empty directory
    assert sorted(p.name for p in again.iterdir()) == [".made", "thing"]
