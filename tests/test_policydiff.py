"""The effective-policy diff (hyperhive/workflow/policydiff.py): the widen/narrow rule of
each field, a real nix evaluation of two agent.nix revisions, its cache and time limit,
the review page's flag, the dashboard's column and `hyperhive approvals --json`."""

import json
import os
import re

import pytest
from support.hive import PASSWORD, commit_config, csrf, log_in, run_cli
from support.wait import wait_for

from forge_ui import create_app
from hyperhive import operator
from hyperhive.cli import policy_line
from hyperhive.hive import Hive
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow import policydiff
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.policydiff import CHANGES, NARROWS, WIDENS, diff_policies


@pytest.fixture
def app(home, runtime):
    operator.set_password(home, PASSWORD)
    return create_app(Hive(home, runtime))


@pytest.fixture
def client(app, home):
    return log_in(app.test_client(), home, "alice")


def api_post(client, path, **kw):
    token = csrf(client)
    return client.post(path, headers={"X-CSRFToken": token}, **kw)


# -- the rules, field by field ------------------------------------------------------------


def rows(before: dict, after: dict) -> list[tuple[str, str, str]]:
    return [(r["field"], r["effect"], r["change"]) for r in diff_policies(before, after)]


def test_nothing_changed_is_no_row():
    same = {"allowedRecipients": ["a"], "allowedBash": ["ls"], "model": "m"}
    assert rows(same, dict(same)) == []
    # an absent option is its default
    assert rows({"allowedRecipients": None}, {"allowSubagents": False, "claude": None}) == []


@pytest.mark.parametrize(
    "before, after, expected",
    [
        (["a"], ["a", "bob"], [(WIDENS, "+ bob")]),
        (["a", "bob"], ["a"], [(NARROWS, "- bob")]),
        (["a"], ["bob"], [(WIDENS, "+ bob"), (NARROWS, "- a")]),
        (None, ["a", "operator"], [(NARROWS, "anyone → only a, operator")]),
        (None, [], [(NARROWS, "anyone → only none")]),
        (["a"], None, [(WIDENS, "only a → anyone")]),
    ],
)
def test_recipients(before, after, expected):
    got = rows({"allowedRecipients": before}, {"allowedRecipients": after})
    assert got == [("allowedRecipients", e, c) for e, c in expected]


@pytest.mark.parametrize(
    "before, after, expected",
    [
        (["ls"], ["ls", "git *"], [(WIDENS, "+ git *")]),
        (["ls", "git *"], ["ls"], [(NARROWS, "- git *")]),
        # replaced by a broader glob: the new one widens, the old one is still allowed
        (["git status"], ["git *"], [(WIDENS, "+ git *"), (CHANGES, "- git status")]),
        # replaced by a narrower one: nothing new, the rest of the old one is gone
        (["git *"], ["git log *"], [(CHANGES, "+ git log *"), (NARROWS, "- git *")]),
        # a `*` of the new pattern is only covered by a `*` of an old one
        (["git l*"], ["git *"], [(WIDENS, "+ git *"), (CHANGES, "- git l*")]),
        (["*"], ["*", "rm -rf /"], [(CHANGES, "+ rm -rf /")]),
        # the prefix form: `npm test:*` is `npm test` and `npm test <args>`
        (["npm test:*"], ["npm test:*", "npm test --watch"], [(CHANGES, "+ npm test --watch")]),
        (["npm test"], ["npm test:*"], [(WIDENS, "+ npm test:*"), (CHANGES, "- npm test")]),
        (["npm test *"], ["npm test:*"], [(WIDENS, "+ npm test:*"), (CHANGES, "- npm test *")]),
        (None, ["ls"], [(NARROWS, "any command → only ls")]),
        (["ls"], None, [(WIDENS, "only ls → any command")]),
    ],
)
def test_bash(before, after, expected):
    got = rows({"allowedBash": before}, {"allowedBash": after})
    assert got == [("allowedBash", e, c) for e, c in expected]


def test_a_broader_glob_names_what_it_replaces():
    (added, removed) = diff_policies({"allowedBash": ["git status"]}, {"allowedBash": ["git *"]})
    assert added["note"] == "broader than git status" and removed["note"] == "still allowed"


SEARCH = {"command": "/bin/search", "args": ["--fast"], "env": {"K": "v"}, "allowedTools": ["*"]}


def servers(before: dict | None, after: dict | None) -> list[tuple[str, str, str]]:
    b = {"extraMcpServers": {"search": before}} if before else {}
    a = {"extraMcpServers": {"search": after}} if after else {}
    return rows(b, a)


def test_mcp_server_added_and_removed():
    assert servers(None, SEARCH) == [
        ("extraMcpServers", WIDENS, "+ search: /bin/search --fast; env K; tools *")
    ]
    assert servers(SEARCH, None) == [
        ("extraMcpServers", NARROWS, "- search: /bin/search --fast; env K; tools *")
    ]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"command": "/bin/other"}, [("", WIDENS, "command /bin/search → /bin/other")]),
        ({"args": ["--fast", "--write"]}, [("", WIDENS, "args --fast → --fast --write")]),
        ({"args": []}, [("", WIDENS, "args --fast → ")]),
        ({"env": {"K": "v", "TOKEN": "t"}}, [(".env", WIDENS, "+ TOKEN")]),
        ({"env": {"K": "other"}}, [(".env", WIDENS, "K changed")]),
        ({"env": {}}, [(".env", CHANGES, "- K")]),
        ({"allowedTools": ["find"]}, [(".allowedTools", NARROWS, "every tool → only find")]),
    ],
)
def test_mcp_server_changed(change, expected):
    got = servers(SEARCH, {**SEARCH, **change})
    assert got == [(f"extraMcpServers.search{f}", e, c) for f, e, c in expected]


def test_mcp_tools_lists():
    find = {**SEARCH, "allowedTools": ["find"]}
    got = servers(find, {**SEARCH, "allowedTools": ["find", "fetch"]})
    assert got == [("extraMcpServers.search.allowedTools", WIDENS, "+ fetch")]
    got = servers(find, {**SEARCH, "allowedTools": ["fetch"]})
    assert [e for _, e, _ in got] == [WIDENS, NARROWS]
    assert servers(find, SEARCH) == [
        ("extraMcpServers.search.allowedTools", WIDENS, "find → every tool")
    ]


@pytest.mark.parametrize(
    "before, after, expected",
    [
        (
            {"model": None},
            {"model": "claude-opus-4"},
            ("model", CHANGES, "default → claude-opus-4"),
        ),
        ({"claude": None}, {"claude": "/opt/c"}, ("claude", WIDENS, "claude on PATH → /opt/c")),
        ({"claude": "/opt/c"}, {"claude": "/opt/d"}, ("claude", WIDENS, "/opt/c → /opt/d")),
        (
            {"allowSubagents": False},
            {"allowSubagents": True},
            ("allowSubagents", WIDENS, "off → on"),
        ),
        ({"allowSubagents": True}, {}, ("allowSubagents", NARROWS, "on → off")),
        ({}, {"notesCompactBytes": 100}, ("notesCompactBytes", CHANGES, "default → 100")),
    ],
)
def test_scalar_fields(before, after, expected):
    assert rows(before, after) == [expected]


def test_packages():
    assert [(r["effect"], r["change"]) for r in policydiff.diff_packages(["git"], ["jq"])] == [
        (WIDENS, "+ jq"),
        (NARROWS, "- git"),
    ]


def test_the_verdict_and_an_error_side():
    def evaluate(commit):
        return {
            "a" * 40: {"policy": {"allowedRecipients": ["x"]}, "packages": []},
            "b" * 40: {"policy": {"allowedRecipients": ["x", "y"]}, "packages": {"error": "no"}},
            "c" * 40: {"error": "cannot evaluate the hyperhive.* options: boom"},
        }[commit]

    d = policydiff.build("a" * 40, "b" * 40, evaluate)
    assert (d["widens"], d["narrows"], d["error"]) == (True, False, None)
    assert d["packages_error"] == "could not evaluate: no"
    d = policydiff.build("a" * 40, "c" * 40, evaluate)
    assert (
        d["error"]
        == "could not evaluate the after side: cannot evaluate the hyperhive.* options: boom"
    )
    # nothing deployed: the default policy is before
    d = policydiff.build(None, "a" * 40, evaluate)
    assert [(r["effect"], r["change"]) for r in d["rows"]] == [(NARROWS, "anyone → only x")]


# -- a real evaluation of two agent.nix revisions ----------------------------------------

BEFORE_NIX = """{ pkgs, ... }:
{
  environment.systemPackages = [ pkgs.git ];
  hyperhive = {
    allowedRecipients = [ "manager" "operator" ];
    allowedBash = [ "git status" "ls" ];
    model = "claude-sonnet-4";
    extraMcpServers.search = { command = "/bin/search"; allowedTools = [ "find" ]; };
  };
}
"""

AFTER_NIX = """{ pkgs, lib, ... }:
{
  imports = [ ./tools.nix ];
  environment.systemPackages = with pkgs; [ git python3Packages.requests ];
  hyperhive = {
    allowedRecipients = [ "manager" "operator" "bob" ];
    allowedBash = [ "git *" ];
    model = "claude-opus-4";
    notesCompactBytes = 4096;
    extraMcpServers.search = {
      command = "/bin/search";
      env.API_KEY = "k";
      allowedTools = [ "find" "fetch" ];
    };
  };
}
"""

TOOLS_NIX = """{ pkgs, ... }: {
  environment.systemPackages = [ pkgs.jq ];
  hyperhive.extraMcpServers.shell = { command = "/bin/sh"; args = [ "-c" "mcp" ]; };
  hyperhive.allowSubagents = true;
}
"""

EXPECTED = [
    ("allowedRecipients", WIDENS, "+ bob"),
    ("allowedBash", WIDENS, "+ git *"),
    ("allowedBash", CHANGES, "- git status"),
    ("allowedBash", NARROWS, "- ls"),
    ("extraMcpServers.search.env", WIDENS, "+ API_KEY"),
    ("extraMcpServers.search.allowedTools", WIDENS, "+ fetch"),
    ("extraMcpServers", WIDENS, "+ shell: /bin/sh -c mcp; tools *"),
    ("model", CHANGES, "claude-sonnet-4 → claude-opus-4"),
    ("allowSubagents", WIDENS, "off → on"),
    ("notesCompactBytes", CHANGES, "default → 4096"),
    ("packages", WIDENS, "+ jq"),
    ("packages", WIDENS, "+ python3Packages.requests"),
]


def propose(home, files: dict[str, str], subject: str):
    commit_config(home, "manager", files, subject)
    return Approvals(home, "manager").propose("HEAD", "manager")


def two_revisions(home):
    """manager#2 proposes BEFORE_NIX, manager#3 AFTER_NIX (with tools.nix)."""
    first = propose(home, {"agent.nix": BEFORE_NIX}, "before")
    second = propose(home, {"agent.nix": AFTER_NIX, "tools.nix": TOOLS_NIX}, "after")
    return first, second


def deployed(home, approval) -> None:
    """Approve and deploy `approval` in this process (the deploying hook removed)."""
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink(missing_ok=True)
    Approvals(home, "manager").approve(approval.id, "alice")
    assert deploy(home, "manager", approval.id, LocalRuntime(home)).state == "deployed"


def evaluate_both(home, first, second, **kw):
    def evaluate(commit):
        return policydiff.evaluated(home, "manager", commit, **kw)

    return policydiff.build(first.commit, second.commit, evaluate)


def test_two_revisions_evaluated_with_nix_give_the_table(home, monkeypatch):
    first, second = two_revisions(home)
    d = evaluate_both(home, first, second)
    assert d["error"] is None and d["packages_error"] is None
    got = [(r["field"], r["effect"], r["change"]) for r in d["rows"]]
    assert sorted(got) == sorted(EXPECTED)
    assert d["widens"] and d["narrows"]

    # cached by commit: nix is no longer needed for them
    for a in (first, second):
        assert (policydiff.cache_dir(home) / f"{a.commit}.json").is_file()
    monkeypatch.setenv("PATH", "/nonexistent")
    assert evaluate_both(home, first, second) == d


def test_a_broken_config_and_a_timeout_could_not_evaluate(home):
    broken = propose(home, {"agent.nix": "{ ... }: { hyperhive.allowedBash = 1; }\n"}, "bad")
    d = policydiff.of_approval(home, broken)
    assert d["error"] == (
        "could not evaluate the after side: hyperhive.allowedBash must be "
        "null or a list of strings, not 1"
    )
    # packages nix cannot name leave only that row out
    odd_nix = """{ pkgs, ... }: {
  environment.systemPackages = [ (pkgs.python3.withPackages (p: [ ])) ];
  hyperhive.allowSubagents = true;
}
"""
    odd = propose(home, {"agent.nix": odd_nix}, "odd")
    d = policydiff.of_approval(home, odd)
    assert [(r["field"], r["effect"]) for r in d["rows"]] == [("allowSubagents", WIDENS)]
    assert d["packages_error"].startswith("could not evaluate: cannot evaluate the packages")

    slow = propose(home, {"agent.nix": '{ ... }: { hyperhive.model = "m"; }\n'}, "slow")
    d = policydiff.of_approval(home, slow, timeout=0.001)
    assert re.fullmatch(
        r"could not evaluate the after side: evaluating .* took over 0.001s: gave up", d["error"]
    )
    # a timeout is not the commit's: not cached, the next try evaluates
    assert policydiff.cached(home, slow.commit) is None
    assert policydiff.of_approval(home, slow)["rows"] == [
        {"field": "model", "effect": CHANGES, "change": "default → m", "note": ""}
    ]


# -- where it is shown ---------------------------------------------------------------------


def reviewed(web, approval) -> str:
    """The review page of `approval` once its policy diff is evaluated: the first view
    says "evaluating…" (the evaluation runs in the background), the fragment its script
    asks for says when it is ready."""
    url = f"/review/manager/{approval.id}"
    page = web.get(url).get_data(as_text=True)
    if 'id="policy-pending"' in page:
        assert 'id="policy-flag"' not in page
        ready = wait_for(lambda: web.get(f"{url}/policy").get_json()["ready"], what="eval")
        assert ready
        page = web.get(url).get_data(as_text=True)
    assert 'id="policy-pending"' not in page
    return page


def test_review_page_flags_a_widening_change_and_the_dashboard_lists_it(client, home, app):
    from forge_ui import state

    Approvals(home, "manager").deny(1, "alice", "no")
    first, second = two_revisions(home)
    # manager#2 is reviewed against nothing deployed: the default policy
    page = client.get(f"/review/manager/{first.id}").get_data(as_text=True)
    assert 'id="policy-pending"' in page
    fragment = wait_for(
        lambda: (f := client.get(f"/review/manager/{first.id}/policy").get_json())["ready"] and f,
        what="the evaluation",
    )
    assert fragment["widens"] is True
    assert "extraMcpServers + search: /bin/search; tools find" in fragment["flag"]
    assert "anyone → only manager, operator" in fragment["table"]
    page = reviewed(client, first)
    assert '<tr class="effect-narrows" data-field="allowedRecipients"' in page

    # manager#2 deployed, manager#3 is reviewed against it
    deployed(home, first)
    page = reviewed(client, second)
    flag = page.split('id="policy-flag"')[1].split("</div>")[0]
    assert "This change widens what manager may do" in flag and "allowedRecipients + bob" in flag
    table = page.split('id="policy-diff"')[1]
    assert table.index("Policy") < table.index("Changes")
    for field, effect, change in EXPECTED:
        assert f'data-field="{field}" data-effect="{effect}"' in table
        assert change.replace(">", "&gt;") in table
    assert "deployed " + first.commit[:12] in table

    # the dashboard: evaluated (cached) above
    body = client.get("/api/state").get_json()
    diffs = {a["target"]: a["policy_diff"] for a in body["approvals"]}
    assert list(diffs) == ["manager#3"] and diffs["manager#3"]["widens"] is True
    dash = client.get("/").get_data(as_text=True)
    row = dash.split('data-target="manager#3"')[1].split("</tr>")[0]
    assert 'class="badge effect-widens"' in row and "allowedRecipients + bob" in row

    # one not evaluated yet: "…" at first, evaluated in the background, the dashboard woken
    fewer = BEFORE_NIX.replace('"git status" "ls"', '"ls"')
    third = propose(home, {"agent.nix": fewer}, "fewer")
    hive = app.extensions["hive"]
    with hive.bus.subscribe("state") as sub:
        assert state.pending(hive)[-1]["policy_diff"] is None
        wait_for(lambda: sub.get(timeout=1), what="the dashboard woken")
    (listed,) = [a for a in state.pending(hive) if a["id"] == third.id]
    assert listed["policy_diff"]["rows"] == [
        {"field": "allowedBash", "effect": NARROWS, "change": "- git status", "note": ""}
    ]
    dash = client.get("/").get_data(as_text=True)
    assert 'class="badge effect-narrows"' in dash.split(f'data-target="{third.target}"')[1]
    page = reviewed(client, third)
    assert 'id="policy-flag"' not in page and 'data-effect="narrows"' in page
    # the API's approval JSON has it too
    r = api_post(client, f"/api/approvals/manager/{third.id}/deny", json={"reason": "no"})
    assert r.get_json()["state"] == "denied" and r.get_json()["policy_diff"]["narrows"] is True
    assert r.get_json()["check"]["state"] == "unfinished"  # no check worker here
    # GET: the approval with its check and its policy diff, evaluated for the request
    got = client.get(f"/api/approvals/manager/{second.id}").get_json()
    assert got["target"] == second.target and got["check"]["state"] == "unfinished"
    assert got["policy_diff"]["widens"] is True and got["policy_diff"]["after"] == second.commit


def test_cli_approvals_json_has_the_policy_diff(home):
    Approvals(home, "manager").deny(1, "alice", "no")
    first, second = two_revisions(home)
    deployed(home, first)
    listed = json.loads(run_cli(home.root, "approvals", "--json", check=True).stdout)
    (a,) = listed
    assert a["target"] == second.target and a["check"]["state"] == "unfinished"
    d = a["policy_diff"]
    assert (d["before"], d["after"], d["widens"], d["error"]) == (
        first.commit,
        second.commit,
        True,
        None,
    )
    assert sorted((r["field"], r["effect"], r["change"]) for r in d["rows"]) == sorted(EXPECTED)
    line = policy_line(d)
    assert line.startswith("  policy WIDENS: allowedRecipients + bob; allowedBash + git *; ")
    assert line.endswith(" (+6 more)")
    assert policy_line({**d, "error": "could not evaluate: x"}) == "  policy: could not evaluate: x"


def test_limits_of_the_stub_packages_and_the_cache(home, tmp_path, monkeypatch):
    from hyperhive.runtime.base import BuildError

    (tmp_path / "agent.nix").write_text("{ pkgs, ... }: { x = [ pkgs.a pkgs.b.c pkgs.d ]; }")
    stub = policydiff._stub_pkgs(tmp_path)
    assert stub["b"]["c"] == {"type": "derivation", "name": "b.c", "outPath": "b.c"}
    assert stub["a"]["outPath"] == "a" and "pkgs" in stub  # `pkgs.a` is also read as a path
    monkeypatch.setattr(policydiff, "MAX_STUB_NAMES", 5)
    with pytest.raises(BuildError, match="uses over 5 names: packages not evaluated"):
        policydiff._stub_pkgs(tmp_path)

    monkeypatch.setattr(policydiff, "CACHE_MAX", 2)
    for i, sha in enumerate("abc"):
        path = policydiff.cache_dir(home) / f"{sha * 40}.json"
        policydiff._store(path, {"evaluator": policydiff.EVALUATOR, "result": {"error": str(i)}})
        os.utime(path, (i, i))  # written in this order
    assert sorted(p.name[0] for p in policydiff.cache_dir(home).glob("*.json")) == ["b", "c"]
    assert policydiff.cached(home, "c" * 40) == {"error": "2"}
    # another evaluator's entry is not an answer
    policydiff._store(path, {"evaluator": "older", "result": {"error": "2"}})
    assert policydiff.cached(home, "c" * 40) is None
    # a commit the repo lacks: said, not cached
    assert policydiff.evaluated(home, "manager", "d" * 40)["error"].endswith(
        "is not in manager's applied repo"
    )
    assert policydiff.cached(home, "d" * 40) is None
    assert policydiff.evaluated(home, "manager", "HEAD") == {"error": "not a commit id: 'HEAD'"}
