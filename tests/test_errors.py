"""Every HiveError lives in hyperhive/errors.py with its HTTP status in the one table, and
the forge answers with that status: a refusal a 4xx, a failure of the hive or its host
(a runtime command, a missing sandbox) a 5xx, never the 400 of an unlisted error."""

import ast
import inspect
from pathlib import Path

import pytest
from support.hive import log_in

from forge_ui import create_app
from hyperhive import errors, operator
from hyperhive.errors import STATUS, HiveError, status_of
from hyperhive.hive import Hive


def subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *subclasses(sub)}
    return found


ROOT = Path(__file__).resolve().parent.parent


def defined_elsewhere() -> list[str]:
    """Classes outside errors.py whose base is a HiveError (read from the source, so no
    module needs importing): each as path:line Name."""
    names = {c.__name__ for c in subclasses(HiveError)} | {"HiveError"}
    found = []
    for path in sorted([*ROOT.glob("hyperhive/**/*.py"), *ROOT.glob("forge_ui/**/*.py")]):
        if path == Path(errors.__file__).resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = {
                    b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                    for b in node.bases
                }
                if bases & names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return found


def test_every_hive_error_is_in_errors_py_with_a_status():
    assert defined_elsewhere() == [], "define HiveError subclasses in hyperhive/errors.py"
    found = subclasses(HiveError)
    assert len(found) >= 25
    unlisted = sorted(c.__name__ for c in found if not any(issubclass(c, k) for k in STATUS))
    assert unlisted == [], "give each HiveError its HTTP status in errors.STATUS"
    assert status_of(HiveError("x")) == errors.REFUSED == 400  # a bare refusal


def test_failures_of_the_host_are_5xx():
    assert status_of(errors.RuntimeCommandError("x")) == 500
    assert status_of(errors.SandboxUnavailable("x")) == 503
    assert status_of(errors.ShuttingDown("x")) == 503
    assert status_of(errors.NotARepository("x")) == 500
    assert status_of(errors.BadSettings("x")) == 500  # before BadInput, its base
    assert status_of(errors.UnknownQuestion("x")) == 404  # through UnknownApproval
    assert status_of(errors.AlreadyDestroyed("x")) == 409  # through IllegalTransition


@pytest.fixture
def failing_client(home, runtime):
    """The forge with one route per HiveError that raises it."""
    operator.set_password(home, "correct horse battery")
    app = create_app(Hive(home, runtime))
    for cls in (HiveError, *STATUS):

        def fail(cls=cls):
            raise cls(f"{cls.__name__} happened")

        app.add_url_rule(f"/api/fail/{cls.__name__}", f"fail_{cls.__name__}", fail)

    def page():
        raise errors.SandboxUnavailable("no bwrap")

    app.add_url_rule("/fail", "fail_page", page)
    return log_in(app.test_client(), home)


def test_the_forge_answers_each_error_with_its_status(failing_client):
    for cls in (HiveError, *STATUS):
        r = failing_client.get(f"/api/fail/{cls.__name__}")
        assert r.status_code == status_of(cls("x")), cls
        assert r.get_json() == {"error": f"{cls.__name__} happened"}
    page = failing_client.get("/fail")
    assert page.status_code == 503 and "no bwrap" in page.get_data(True)  # the HTML page


def test_errors_py_imports_nothing_of_the_hive():
    """The bottom of every layer: errors.py imports only the standard library."""
    source = inspect.getsource(errors)
    assert "import hyperhive" not in source and "from hyperhive" not in source
