"""`pytest --cpu-top=N`: the N tests that cost the most CPU, the processes they started
included, beside their wall time (a pytest plugin conftest.py loads).

`--durations` gives wall time, which on a shared machine is mostly the other tests' load
and on any machine includes the polls and waits that cost nothing; the suite's length on
2 cores is bounded by its CPU. A test's CPU is its worker's own (getrusage, self) plus
that of the processes it started and reaped (children: a daemon's counts once the test
ends it, with the harnesses the daemon reaped), from its setup to its teardown; a
module-scoped fixture's start counts to the module's first test. What a session-scoped
fixture's processes took is reaped in the teardown of whichever test ran last: a fixture
that says so (`apart`) is listed on its own line instead, as "(session) <what>"."""

import contextlib
import resource
import time
from collections.abc import Iterator

import pytest

KEY = "cpu_seconds"
APART = "cpu_seconds_apart"
_START = pytest.StashKey[tuple[float, float]]()
_APART = pytest.StashKey[list[tuple[str, float]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-top",
        type=int,
        default=0,
        metavar="N",
        help="list the N tests that cost the most CPU (their processes included); 0: none",
    )


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def apart(config: pytest.Config, what: str) -> Iterator[None]:
    """The CPU spent inside (a session fixture ending its processes, which reaps what they
    took over the whole session) is not the current test's: it is listed as `what`."""
    start = _cpu()
    try:
        yield
    finally:
        config.stash.setdefault(_APART, []).append((what, _cpu() - start))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_START] = (_cpu(), time.monotonic())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if call.when == "teardown" and _START in item.stash:
        cpu, wall = item.stash[_START]
        set_apart = item.config.stash.get(_APART, [])
        item.config.stash[_APART] = []
        taken = _cpu() - cpu - sum(c for _, c in set_apart)
        # user_properties travel from an xdist worker to the controller with the report
        props = outcome.get_result().user_properties
        props.append((KEY, (taken, time.monotonic() - wall)))
        props += [(APART, (c, what)) for what, c in set_apart]


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("cpu_top") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Top(config.getoption("cpu_top")), "cpu-top")


class Top:
    """What the process that reports the run (an xdist controller, or a plain run) saw."""

    def __init__(self, top: int):
        self.top = top
        self.seen: list[tuple[float, float, str]] = []  # (cpu, wall, nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            for key, value in report.user_properties:
                if key == KEY:
                    self.seen.append((*value, report.nodeid))
                elif key == APART:
                    self.seen.append((value[0], 0.0, f"(session) {value[1]}"))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seen:
            return
        total = sum(cpu for cpu, _, _ in self.seen)
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", f"the {self.top} tests that cost the most CPU")
        for cpu, wall, nodeid in sorted(self.seen, reverse=True)[: self.top]:
            write(f"{cpu:7.2f}s cpu {wall:7.2f}s wall  {nodeid}")
        by_module: dict[str, list[float]] = {}
        for cpu, wall, nodeid in self.seen:
            both = by_module.setdefault(nodeid.split("::")[0], [0.0, 0.0])
            both[0], both[1] = both[0] + cpu, both[1] + wall
        terminalreporter.write_sep("=", f"the {self.top} modules that cost the most CPU")
        for module, (cpu, wall) in sorted(by_module.items(), key=lambda kv: -kv[1][0])[: self.top]:
            write(f"{cpu:7.2f}s cpu {wall:7.2f}s wall  {module}")
        tests = sum(1 for _, _, nodeid in self.seen if not nodeid.startswith("(session) "))
        write(f"{total:.1f} s of CPU in {tests} tests")
