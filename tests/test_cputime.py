"""`pytest --cpu-top=N` (tests/support/cputime.py) on a run of its own: the test whose
subprocess burns CPU comes first, with the CPU its process took; the modules' totals and
the run's follow; without the option nothing is listed."""

BUSY = """
import subprocess, sys

def test_idle():
    pass

def test_busy_child():
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"], check=True)

def test_busy_self():
    sum(i * i for i in range(300_000))
"""


def test_the_tests_that_cost_the_most_cpu_are_listed_first(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the plugin alone: a quick start
    pytester.makepyfile(test_busy=BUSY)
    out = pytester.runpytest_inprocess("-p", "support.cputime", "--cpu-top=2", "-q")
    out.assert_outcomes(passed=3)
    lines = out.outlines
    top = lines.index(next(x for x in lines if "the 2 tests that cost the most CPU" in x))
    first, second = lines[top + 1].split(), lines[top + 2].split()
    assert first[-1] == "test_busy.py::test_busy_child" and float(first[0][:-1]) > 0.1
    assert second[-1] == "test_busy.py::test_busy_self"
    assert not any("test_idle" in x for x in lines[top + 1 : top + 3])
    module = lines[lines.index(next(x for x in lines if "modules that cost" in x)) + 1]
    assert module.split()[-1] == "test_busy.py" and float(module.split()[0][:-1]) >= float(
        first[0][:-1]
    )
    assert any(x.endswith("s of CPU in 3 tests") for x in lines)

    plain = pytester.runpytest_inprocess("-p", "support.cputime", "-q")
    assert not any("cost the most CPU" in x for x in plain.outlines)


SESSION = """
import subprocess, sys
import pytest
from support.cputime import apart

@pytest.fixture(scope="session")
def busy(pytestconfig):
    proc = subprocess.Popen([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"])
    yield
    with apart(pytestconfig, "the busy fixture"):
        proc.wait()  # reaped here: its CPU lands in the last test's teardown

def test_first(busy):
    pass

def test_last():
    pass
"""


def test_a_session_fixtures_processes_are_listed_apart_from_the_last_test(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_session=SESSION)
    out = pytester.runpytest_inprocess("-p", "support.cputime", "--cpu-top=3", "-q")
    out.assert_outcomes(passed=2)
    lines = out.outlines
    top = lines.index(next(x for x in lines if "the 3 tests that cost the most CPU" in x))
    first = lines[top + 1].split()
    assert " ".join(first[4:]) == "(session) the busy fixture" and float(first[0][:-1]) > 0.1
    last = next(x for x in lines[top + 1 : top + 4] if x.endswith("::test_last")).split()
    assert float(last[0][:-1]) < float(first[0][:-1]) / 2
    assert any(x.endswith("s of CPU in 2 tests") for x in lines)
