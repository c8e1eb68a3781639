"""Tag retention: the pure policy against crafted histories, the prune run on real repos
(checked with the git CLI), its meta records, the history views of pruned approvals,
`hyperhive prune` / `hyperhive meta log`, prune racing transitions, and a property test
over random histories."""

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemon import Daemon
from support.hive import SHORT_STATES, commit_config, fresh_commit, git, log_in, run_cli
from support.inprocess import never_serve, run_main
from support.nix import host, nix_eval
from support.wait import wait_for

from forge_ui import create_app
from forge_ui.filters import utc
from hyperhive.agents import create_agent, init_hive
from hyperhive.errors import IllegalTransition, UnknownApproval
from hyperhive.gitstore.tags import write_tag
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Retention
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals, when
from hyperhive.workflow.checks import history_json  # with each approval's check, as shown
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.lock import locked, transition_lock
from hyperhive.workflow.retention import DAY, plan, prune
from hyperhive.workflow.states import TERMINAL, State, tag_ref

P, A, D, B, OK, F = SHORT_STATES
# The tags an approval in each state has.
PATHS = {P: [P], A: [P, A], D: [P, D], B: [P, A, B], OK: [P, A, B, OK], F: [P, A, B, F]}
N = 30  # failed days in most tests
T0 = 1_700_000_000


def ago(days: float, seconds: int = 0) -> int:
    return int(T0 - days * DAY - seconds)


# -- the policy, a pure function ------------------------------------------------------------


def history(**approvals: tuple[State, int]) -> dict[str, int]:
    """`a3=(F, ago(40))` -> every tag of approval 3 on the way to failed, written then."""
    return {
        f"{s}/{key[1:]}": written
        for key, (final, written) in approvals.items()
        for s in PATHS[final]
    }


def test_each_rule():
    tags = history(
        a1=(OK, ago(4000)),  # deployed: kept forever; its earlier tags go
        a2=(D, ago(1)),  # a fresh denial: the proposal goes, the denial stays
        a3=(F, ago(40)),  # an old failure: everything goes
        a4=(D, ago(40)),  # an old denial: everything goes
        a5=(P, ago(4000)),  # pending, approved, building: untouched however old
        a6=(A, ago(4000)),
        a7=(B, ago(4000)),
        a8=(F, ago(2)),  # a fresh failure: proposal/approved/building go
    )
    # Tags outside the state machine are never touched.
    tags |= {"v1.0": ago(4000), "failed/x": ago(4000), "other/9": ago(4000), "failed/": 0}
    assert plan(tags, T0, N) == {
        "proposal/1",
        "approved/1",
        "building/1",
        "proposal/2",
        "proposal/3",
        "approved/3",
        "building/3",
        "failed/3",
        "proposal/4",
        "denied/4",
        "proposal/8",
        "approved/8",
        "building/8",
    }


@pytest.mark.parametrize("terminal", [F, D])
def test_the_boundary_is_exactly_n_days(terminal):
    exactly = {f"{terminal}/1": ago(N)}
    assert plan(exactly, T0, N) == set()  # exactly N days old: kept
    older = {f"{terminal}/1": ago(N, seconds=1)}
    assert plan(older, T0, N) == {f"{terminal}/1"}
    assert plan({f"{terminal}/1": ago(1)}, T0, 1) == set()
    assert plan({f"{terminal}/1": ago(1, 1)}, T0, 1) == {f"{terminal}/1"}


def test_zero_days_keeps_failed_and_denied_forever():
    tags = history(a1=(F, ago(10_000)), a2=(D, ago(10_000)), a3=(OK, ago(10_000)))
    assert plan(tags, T0, 0) == {
        "proposal/1",
        "approved/1",
        "building/1",
        "proposal/2",
        "proposal/3",
        "approved/3",
        "building/3",
    }


def test_a_terminal_tag_alone_is_judged_by_its_age():
    assert plan({"deployed/4": ago(9999)}, T0, N) == set()
    assert plan({"failed/4": ago(N + 1)}, T0, N) == {"failed/4"}
    assert plan({}, T0, N) == set()


# -- on real repos --------------------------------------------------------------------------


def quiet(home: Home, name: str) -> None:
    """No post-receive: a transition is just a transition (the shipped one deploys)."""
    (home.applied_dir(name) / "hooks" / "post-receive").unlink()


def config_head(home: Home, name: str) -> str:
    return git(home.config_dir(name), "rev-parse", "HEAD").strip()


def craft(home: Home, name: str, final: State, at: float) -> int:
    """A new approval of `name` that went to `final`, every tag written at `at`; its id
    comes from the real counter."""
    approvals = Approvals(home, name)
    commit = config_head(home, name).encode()  # in the applied repo since its proposal #1
    with approvals.repo() as repo, locked(transition_lock(approvals.dir)):
        approval_id = approvals._next_id(repo)
        for s in PATHS[final]:
            ref = tag_ref(s, approval_id)
            write_tag(repo, ref, commit, "crafter", f"{s} {name}#{approval_id}", {}, when=int(at))
    return approval_id


def refs_of(home: Home, name: str = "manager", prefix: str = "refs/") -> dict[str, str]:
    out = git(home.applied_dir(name), "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split() for line in out.splitlines())


def tag_times(home: Home, name: str = "manager") -> dict[str, int]:
    out = git(
        home.applied_dir(name),
        "for-each-ref",
        "--format=%(refname:strip=2) %(taggerdate:unix)",
        "refs/tags/",
    )
    return {tag: int(t) for tag, t in (line.split() for line in out.splitlines())}


@pytest.fixture
def hive(home: Home) -> Home:
    quiet(home, "manager")
    return home


def test_for_each_ref_after_pruning_matches_the_policy_exactly(hive: Home):
    now = time.time()
    for final in (OK, F, D):
        for age in (0, N * DAY - 1, N * DAY, N * DAY + 1, 400 * DAY):
            craft(hive, "manager", final, now - age)
    for final in (P, A, B):
        craft(hive, "manager", final, now - 400 * DAY)
    before = refs_of(hive)
    times = tag_times(hive)
    last_id = before["refs/hyperhive/last-id"]

    report = prune(hive, N, now=now)

    doomed = {f"refs/tags/{t}" for t in plan(times, now, N)}
    assert doomed and not report.errors
    assert refs_of(hive) == {r: sha for r, sha in before.items() if r not in doomed}
    assert refs_of(hive)["refs/hyperhive/last-id"] == last_id
    assert {f"refs/tags/{t.tag}" for t in report.removed} == doomed
    # Every tag is packed: no loose tag file is left, and git agrees with packed-refs.
    applied = hive.applied_dir("manager")
    assert [p for p in (applied / "refs" / "tags").rglob("*") if p.is_file()] == []
    packed = (applied / "packed-refs").read_text()
    assert all(
        f"{sha} {ref}\n" in packed for ref, sha in refs_of(hive, prefix="refs/tags/").items()
    )
    git(applied, "fsck", "--no-dangling")
    # One meta commit records exactly what went, and changes no pin.
    assert report.record == git(hive.meta_dir, "rev-parse", "main").strip()
    git(hive.meta_dir, "diff-tree", "--quiet", "main~1", "main")
    message = git(hive.meta_dir, "log", "-1", "--format=%B", "main")
    lines = {line for line in message.splitlines() if line.startswith("Pruned: ")}
    commit = config_head(hive, "manager")
    assert {line.split()[2] for line in lines} == {r.removeprefix("refs/tags/") for r in doomed}
    assert all(line.split()[1] == "manager" and line.split()[3] == commit for line in lines)

    # A second run finds nothing and records nothing.
    again = prune(hive, N, now=now)
    assert again.removed == [] and again.record is None
    assert git(hive.meta_dir, "rev-parse", "main").strip() == report.record


def test_dry_run_changes_nothing_and_lists_what_a_run_removes(hive: Home):
    now = time.time()
    craft(hive, "manager", F, now - 40 * DAY)
    craft(hive, "manager", OK, now)

    def snapshot():
        files = sorted(
            (str(p.relative_to(hive.root)), p.stat().st_size)
            for p in hive.root.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")
        )
        return refs_of(hive), git(hive.meta_dir, "rev-parse", "main"), files

    before = snapshot()
    dry = prune(hive, N, dry_run=True, now=now)
    assert snapshot() == before
    assert dry.record is None and len(dry.removed) == 7
    real = prune(hive, N, now=now)
    assert [t.tag for t in real.removed] == [t.tag for t in dry.removed]


def test_failed_build_logs_go_with_their_tags(hive: Home):
    now = time.time()
    old_fail = craft(hive, "manager", F, now - 40 * DAY)
    new_fail = craft(hive, "manager", F, now - DAY)
    old_deploy = craft(hive, "manager", OK, now - 400 * DAY)
    for i in (old_fail, new_fail, old_deploy):
        hive.build_log("manager", i).parent.mkdir(parents=True, exist_ok=True)
        hive.build_log("manager", i).write_text(f"build {i}\n")
    assert prune(hive, N, dry_run=True, now=now).logs == [hive.build_log("manager", old_fail)]
    report = prune(hive, N, now=now)
    assert report.logs == [hive.build_log("manager", old_fail)]
    assert not hive.build_log("manager", old_fail).exists()
    assert hive.build_log("manager", new_fail).exists()
    assert hive.build_log("manager", old_deploy).exists()


def record_time(home: Home, sha: str) -> int:
    return int(git(home.meta_dir, "show", "-s", "--format=%ct", sha))


def test_pruned_approvals_keep_their_final_state_in_every_history(hive: Home):
    now = time.time()
    deployed = craft(hive, "manager", OK, now - 400 * DAY)
    failed = craft(hive, "manager", F, now - 40 * DAY)
    denied = craft(hive, "manager", D, now - 40 * DAY)
    report = prune(hive, N, now=now)
    pruned_on = record_time(hive, report.record)
    approvals = Approvals(hive, "manager")

    with pytest.raises(UnknownApproval):
        approvals.get(failed)  # the workflow itself sees only tags
    a = approvals.get(failed, with_pruned=True)
    assert (a.state, a.live, a.pruned_on) == (F, set(), pruned_on)
    assert [s for s, _ in a.history()] == [P, A, B, F]  # each tag whole, from the record
    assert a.pruned_history() == [] and a.states[F].actor == "crafter"
    assert {t.record for t in a.pruned.values()} == {report.record}
    assert a.commit == config_head(hive, "manager")
    d = approvals.get(deployed, with_pruned=True)
    assert d.state == OK and d.live == {OK} and d.pruned_on is None
    assert set(d.pruned) == {P, A, B} and [s for s, _ in d.history()] == [P, A, B, OK]

    by_id = {x["id"]: x for x in history_json(hive, "manager")["approvals"]}
    assert by_id[failed]["state"] == "failed" and by_id[failed]["pruned"] == []
    assert by_id[failed]["pruned_on"] == pruned_on
    assert [(s["tag"], s["pruned_on"]) for s in by_id[failed]["states"]] == [
        (f"refs/tags/{s}/{failed}", pruned_on)
        for s in ("proposal", "approved", "building", "failed")
    ]
    assert by_id[denied]["state"] == "denied"
    assert by_id[1]["pruned"] == [] and by_id[1]["state"] == "proposal"

    out = run_main(hive.root, "history", "manager", check=True).stdout
    assert f"manager#{failed}  pruned on {when(pruned_on)}, final state failed" in out
    assert f"manager#{denied}  pruned on {when(pruned_on)}, final state denied" in out
    assert f"manager#{deployed}  deployed" in out

    # A pruned approval cannot be decided or built again.
    with pytest.raises(UnknownApproval):
        approvals.approve(failed, "zoe")
    with pytest.raises(IllegalTransition, match="it is deployed"):
        approvals.transition(deployed, State.BUILDING, "zoe")
    proc = run_main(hive.root, "deploy", f"manager#{denied}", "--here")
    assert proc.returncode == 1 and "unknown approval" in proc.stderr


def test_approvals_all_lists_pruned_approvals_as_history_does(hive: Home):
    """`approvals --all` is every approval: one retention removed entirely is still there,
    with its final state, and what was pruned of the others is said, not hidden."""
    now = time.time()
    deployed = craft(hive, "manager", OK, now - 400 * DAY)
    failed = craft(hive, "manager", F, now - 40 * DAY)
    pruned_on = record_time(hive, prune(hive, N, now=now).record)

    listed = json.loads(run_main(hive.root, "approvals", "--all", "--json", check=True).stdout)
    by_id = {a["id"]: a for a in listed}
    history = {a["id"]: a for a in history_json(hive, "manager")["approvals"]}
    assert sorted(by_id) == sorted(history) == [1, deployed, failed]
    for approval_id, a in by_id.items():
        listed_only = {k: v for k, v in a.items() if k != "policy_diff"}
        assert listed_only == {k: v for k, v in history[approval_id].items() if k != "hooks"}
    assert (by_id[failed]["state"], by_id[failed]["pruned_on"]) == ("failed", pruned_on)
    assert [s["state"] for s in by_id[deployed]["states"] if s["pruned_on"]] == [
        "proposal",
        "approved",
        "building",
    ]

    out = run_main(hive.root, "approvals", "--all", check=True).stdout
    assert f"manager#{failed}" in out and f"pruned on {when(pruned_on)}" in out
    assert run_main(hive.root, "approvals", "--json", check=True).stdout.count('"id"') == 1


def without_pruned_on(data):
    """`data` with every `pruned_on` taken out: all that pruning may change."""
    if isinstance(data, dict):
        return {k: without_pruned_on(v) for k, v in data.items() if k != "pruned_on"}
    if isinstance(data, list):
        return [without_pruned_on(v) for v in data]
    return data


def test_the_audit_survives_retention_whole(hive: Home, runtime):
    """Who did what, when and why reads the same after a prune: `history --json` differs
    only in `pruned_on`, and the git CLI alone reads each removed tag from the record."""
    approvals = Approvals(hive, "manager")
    approvals.approve(1, "alice")
    deploy(hive, "manager", 1, runtime)
    commit_config(hive, "manager", {"notes.md": "a\n"}, "add notes")
    denied = approvals.propose("HEAD", "manager", reason="try notes: it | helps\n\ttwice").id
    approvals.deny(denied, "bob", "not | now:  Actor: mallory")
    failed = craft(hive, "manager", F, time.time() - 40 * DAY)
    before = json.loads(run_main(hive.root, "history", "manager", "--json", check=True).stdout)
    text_before = run_main(hive.root, "history", "manager", check=True).stdout

    report = prune(hive, N, now=time.time() + 40 * DAY)  # the denial is old by then
    after = json.loads(run_main(hive.root, "history", "manager", "--json", check=True).stdout)
    assert len(report.removed) == 9  # #1: 3, the denied: 2, the failed: 4
    assert without_pruned_on(after) == without_pruned_on(before)
    pruned_on = record_time(hive, report.record)
    by_id = {a["id"]: a for a in after["approvals"]}
    assert by_id[denied]["pruned_on"] == by_id[failed]["pruned_on"] == pruned_on
    assert by_id[1]["pruned_on"] is None  # its deployed tag stays
    assert [s["pruned_on"] for s in by_id[1]["states"]] == [pruned_on] * 3 + [None]
    assert by_id[1]["states"][1]["actor"] == "alice"
    assert by_id[denied]["states"][1]["trailers"]["Reason"] == "not | now: Actor: mallory"
    text_after = run_main(hive.root, "history", "manager", check=True).stdout
    assert "Reason: not | now: Actor: mallory" in text_after and "alice" in text_after
    rows = [line for line in text_before.splitlines() if line.startswith("  ")]
    assert len(rows) == 10 and all(  # each state's row, only said to be pruned now
        any(after_line.startswith(row) for after_line in text_after.splitlines()) for row in rows
    )

    # The git CLI: the record shows every tag whole, and each copy is that very object.
    body = git(hive.meta_dir, "log", "-1", "--format=%B", "refs/hyperhive/pruned")
    assert "| tagger bob <bob@hyperhive>" in body and "| Reason: not | now" in body
    copies = body.split("\nTag: ")[1:]
    assert len(copies) == 9
    for copy in copies:
        head, *quoted = copy.split("\n\n", 1)[0].rstrip("\n").split("\n")
        agent, tag, sha = head.split()
        raw = "".join(line[2:] + "\n" for line in quoted)
        made = subprocess.run(
            ["git", "hash-object", "-t", "tag", "--stdin"],
            input=raw,
            capture_output=True,
            text=True,
            check=True,
            cwd=hive.meta_dir,
        ).stdout.strip()
        assert (agent, made) == ("manager", sha)
    trailers = git(hive.meta_dir, "log", "-1", "--format=%(trailers:key=Pruned)", "main")
    assert trailers.count("Pruned: manager ") == 9  # git still finds the trailers

    # A copy that does not hash to its tag is ignored: the tag reads as lost, not forged.
    forged = meta.PrunedTag("manager", f"failed/{failed}", "0" * 40, 0, sha="1" * 40, raw=b"x")
    assert forged.info() is None


def test_a_record_without_copies_still_names_its_tags(hive: Home, monkeypatch):
    """Records written before they kept the tags whole: the states are named, no more."""
    monkeypatch.setattr(meta, "_quote_tag", lambda t: "")  # as records were written before
    failed = craft(hive, "manager", F, time.time() - 40 * DAY)
    report = prune(hive, N)
    assert "\nTag: " not in git(hive.meta_dir, "log", "-1", "--format=%B", "main")
    a = Approvals(hive, "manager").get(failed, with_pruned=True)
    assert a.states == {} and a.pruned_on == record_time(hive, report.record)
    assert [s for s, _ in a.pruned_history()] == [P, A, B, F]
    assert [p["record"] for p in a.to_json()["pruned"]] == [report.record] * 4


def test_ids_are_never_reused_after_the_newest_approval_is_pruned(hive: Home):
    newest = craft(hive, "manager", D, time.time() - 40 * DAY)
    last_id = refs_of(hive)["refs/hyperhive/last-id"]
    prune(hive, N)
    assert not [r for r in refs_of(hive) if r.endswith(f"/{newest}")]
    assert refs_of(hive)["refs/hyperhive/last-id"] == last_id  # prune never touches it
    commit_config(hive, "manager", {"notes.md": "new\n"}, "something new to propose")
    proc = run_main(hive.root, "propose", "manager", check=True)
    assert proc.stdout.strip() == f"manager#{newest + 1}"


def test_a_counter_behind_the_tags_stops_the_repo_and_nothing_is_lost(hive: Home):
    craft(hive, "manager", F, time.time() - 40 * DAY)
    applied = hive.applied_dir("manager")
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=applied,
        input="1\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git(applied, "update-ref", "refs/hyperhive/last-id", blob)
    before = refs_of(hive)
    proc = run_cli(hive.root, "prune")  # a real process's refusal
    assert proc.returncode == 1
    assert "manager not pruned: refs/hyperhive/last-id of manager (1) is below approval 2" in (
        proc.stderr
    )
    assert refs_of(hive) == before


def test_a_stale_packed_refs_lock_skips_that_agent_only(hive: Home, runtime):
    create_agent(hive, "bob", runtime, "operator")
    quiet(hive, "bob")
    for name in ("manager", "bob"):
        craft(hive, name, F, time.time() - 40 * DAY)
    lock = hive.applied_dir("manager") / "packed-refs.lock"
    lock.write_text("")
    before = refs_of(hive)
    proc = run_main(hive.root, "prune", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [e["agent"] for e in report["errors"]] == ["manager"]
    assert "packed-refs.lock exists" in report["errors"][0]["error"]
    assert {t["agent"] for t in report["removed"]} == {"bob"}
    assert refs_of(hive) == before  # nothing of manager's went
    assert "refs/tags/failed/2" not in refs_of(hive, "bob")
    lock.unlink()
    assert run_main(hive.root, "prune").returncode == 0
    assert "refs/tags/failed/2" not in refs_of(hive)


def test_a_record_of_tags_that_still_exist_is_ignored(hive: Home):
    """A crash between the record and the deletion: the tags are what counts."""
    failed = craft(hive, "manager", F, time.time() - 40 * DAY)
    tag = meta.PrunedTag("manager", f"failed/{failed}", config_head(hive, "manager"), T0)
    meta.record_prune(hive, [tag], N)
    a = Approvals(hive, "manager").get(failed, with_pruned=True)
    assert a.pruned == {} and F in a.states
    report = prune(hive, N)
    assert f"failed/{failed}" in [t.tag for t in report.removed]
    a = Approvals(hive, "manager").get(failed, with_pruned=True)
    assert a.pruned[F].record == report.record  # the newest record wins


def test_cli_prune_and_meta_log(hive: Home, runtime):
    Approvals(hive, "manager").approve(1, "operator")
    deploy(hive, "manager", 1, runtime)
    craft(hive, "manager", F, time.time() - 40 * DAY)

    proc = run_main(hive.root, "prune", "--dry-run", "--json", check=True)
    dry = json.loads(proc.stdout)
    assert dry["dry_run"] is True and dry["record"] is None and dry["failed_days"] == 30
    assert [t["tag"] for t in dry["removed"]] == [
        "proposal/1",
        "approved/1",
        "building/1",
        "proposal/2",
        "approved/2",
        "building/2",
        "failed/2",
    ]
    proc = run_main(hive.root, "prune", "--failed-days", "0", check=True)
    assert "removed manager proposal/1  " in proc.stdout
    assert "failed/2" not in proc.stdout  # 0: failed tags are kept forever
    assert "recorded in meta.git " in proc.stdout
    assert run_main(hive.root, "prune", "--failed-days", "0").stdout == "nothing to prune\n"
    (hive.root / "hyperhive.toml").write_text("[retention]\nfailed_days = 45\n")
    assert "nothing to prune" in run_main(hive.root, "prune", check=True).stdout  # 40 < 45 days
    proc = run_main(hive.root, "prune", "--failed-days", "31", check=True)
    assert "removed manager failed/2  " in proc.stdout

    for bad in ("-1", "1.5"):
        proc = run_main(hive.root, "prune", "--failed-days", bad)
        assert proc.returncode == 2 and "number of days" in proc.stderr
    (hive.root / "hyperhive.toml").write_text("[retention]\nfailed_days = -2\n")
    proc = run_main(hive.root, "prune")
    assert proc.returncode == 1 and "retention.failed_days must be at least 0" in proc.stderr

    entries = json.loads(run_main(hive.root, "meta", "log", "--json", check=True).stdout)
    assert [e["kind"] for e in entries] == ["prune", "prune", "deploy", "init"]
    deploy_entry = entries[2]
    assert deploy_entry["agent"] == "manager" and deploy_entry["approval"] == 1
    assert deploy_entry["revision"] == config_head(hive, "manager")
    assert deploy_entry["time"] == record_time(hive, deploy_entry["commit"])
    assert [t["tag"] for t in entries[0]["removed"]] == ["failed/2"]
    assert entries[0]["removed"][0]["commit"] == config_head(hive, "manager")
    text = run_cli(hive.root, "meta", "log", check=True).stdout.splitlines()  # a real one
    assert "  prune    1 tags" in text[0] and text[1].startswith("    manager failed/2  ")
    assert any(f"deploy   manager#1  {config_head(hive, 'manager')[:12]}" in t for t in text)


def test_prune_while_another_thread_runs_transitions(hive: Home):
    """Prune runs over and over while a thread drives approvals through every path: no
    transition is lost, neither side errs, and a last run leaves exactly the policy."""
    now = time.time()
    for final in (OK, F, D) * 3:
        craft(hive, "manager", final, now - 40 * DAY)
    driven: dict[int, State] = {}
    errors: list[BaseException] = []

    def drive():
        approvals = Approvals(hive, "manager")
        try:
            for n in range(24):
                final = [OK, F, D, P, A, B][n % 6]
                i = approvals.propose(fresh_commit(hive, "manager"), "driver").id
                for s in PATHS[final][1:]:
                    approvals.transition(i, s, "driver", {"Reason": "r"} if s is D else None)
                driven[i] = final
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=drive)
    thread.start()
    runs = 0
    while thread.is_alive() or runs == 0:
        report = prune(hive, N)
        assert report.errors == {}
        runs += 1
    thread.join()
    assert errors == []

    final_report = prune(hive, N)
    assert final_report.errors == {}
    approvals = Approvals(hive, "manager")
    tags = refs_of(hive, prefix="refs/tags/")
    for i, final in driven.items():
        assert approvals.get(i, with_pruned=True).state == final
        if final in TERMINAL:  # fresh: only the terminal tag is left
            assert {r for r in tags if r.endswith(f"/{i}")} == {f"refs/tags/{final}/{i}"}
        else:  # untouched
            assert {r for r in tags if r.endswith(f"/{i}")} == {
                f"refs/tags/{s}/{i}" for s in PATHS[final]
            }
    assert plan(tag_times(hive), time.time(), N) == set()
    assert len(set(driven)) == 24


# -- a property over random histories ------------------------------------------------------

FINALS = st.sampled_from(list(PATHS))


@st.composite
def histories(draw):
    failed_days = draw(st.integers(0, 45))
    boundary = [failed_days * DAY + d for d in (-1, 0, 1)] if failed_days else []
    ages = st.one_of(st.integers(0, 90 * DAY), st.sampled_from(boundary or [0]))
    return failed_days, draw(st.lists(st.tuples(FINALS, ages), max_size=8))


@pytest.fixture(scope="module")
def new_hive(tmp_path_factory) -> Path:
    """A new hive without post-receive, to copy: what init_hive and quiet make each time,
    at a copy's cost (nothing in it names its own path)."""
    home = Home(tmp_path_factory.mktemp("new") / "hive")
    init_hive(home, LocalRuntime(home), "operator")
    quiet(home, "manager")
    return home.root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_property_final_states_survive_and_ids_stay_unique(new_hive, case):
    failed_days, approvals_spec = case
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "hive")
        shutil.copytree(new_hive, home.root, symlinks=True)
        made = {1: P} | {
            craft(home, "manager", final, now - age): final for final, age in approvals_spec
        }
        before = refs_of(home, prefix="refs/tags/")
        times = tag_times(home)

        report = prune(home, failed_days, now=now)

        assert report.errors == {}
        after = refs_of(home, prefix="refs/tags/")
        doomed = {f"refs/tags/{t}" for t in plan(times, now, failed_days)}
        assert after == {r: sha for r, sha in before.items() if r not in doomed}
        approvals = Approvals(home, "manager")
        for i, final in made.items():
            mine = {r for r in before if r.endswith(f"/{i}")}
            if final in TERMINAL:  # still reports its final state
                assert approvals.get(i, with_pruned=True).state == final
                assert history_json(home, "manager")["approvals"][list(made).index(i)]["state"] == (
                    final
                )
            else:  # lost no tag
                assert mine <= set(after)
            if final is OK:
                assert f"refs/tags/deployed/{i}" in after
        recorded = {(t.tag, t.commit) for r in meta.prune_records(home) for t in r.tags}
        assert recorded == {
            (r.removeprefix("refs/tags/"), config_head(home, "manager")) for r in doomed
        }
        new = [approvals.propose(fresh_commit(home, "manager"), "o").id for _ in range(2)]
        assert new == [max(made) + 1, max(made) + 2]


# -- the forge's history views --------------------------------------------------------------


@pytest.fixture
def client(hive: Home, runtime: LocalRuntime):
    c = create_app(Hive(hive, runtime)).test_client()
    log_in(c, hive, "alice")
    return c


def test_forge_shows_pruned_approvals(hive: Home, runtime: LocalRuntime, client):
    approvals = Approvals(hive, "manager")
    approvals.approve(1, "operator")
    first = deploy(hive, "manager", 1, runtime).commit
    commit_config(hive, "manager", {"notes.md": "hello\n"}, "add notes")
    second = approvals.propose("HEAD", "operator").id
    approvals.approve(second, "operator")
    deploy(hive, "manager", second, runtime)
    failed = craft(hive, "manager", F, time.time() - 40 * DAY)
    report = prune(hive, N)
    pruned_on = utc(record_time(hive, report.record))

    page = client.get("/agents/manager").get_data(as_text=True)
    assert f'pruned on {pruned_on}, final state</span> <span class="badge state-failed">' in page
    assert "add notes" in page  # the subject, read from the commit once the proposal is gone

    r = client.get(f"/review/manager/{failed}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert f"Pruned on {pruned_on}, final state <strong>failed</strong>." in page
    assert page.count("tag pruned on") == 4
    assert f"/repos/meta/commit/{report.record}" in page

    page = client.get(f"/review/manager/{second}").get_data(as_text=True)
    assert page.count("tag pruned on") == 3  # proposal, approved, building
    assert page.count("<td>operator</td>") == 2  # proposed, approved: kept by the record
    assert f'against deployed <a href="/repos/manager/applied/commit/{first}"' in page
    assert "notes.md" in page and "agent.nix" not in page  # the diff against #1

    api = client.get("/api/agents/manager/history").get_json()
    assert api == json.loads(json.dumps(history_json(hive, "manager")))
    assert client.get("/review/manager/99").status_code == 404
    for url in [f"/builds/manager/{failed}", f"/builds/manager/{failed}/raw"]:
        r = client.get(url)
        assert r.status_code == 404
        assert f"manager#{failed} was pruned on {pruned_on} (final state failed)" in r.get_data(
            as_text=True
        )


# -- the daemon's job and the NixOS options --------------------------------------------------


def test_the_daemon_schedules_the_daily_prune(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HYPERHIVE_RETENTION_PRUNE_AT", "04:15")
    daemon = Daemon(tmp_path / "hive").start()
    try:
        wait_for(
            lambda: "job retention: daily at 04:15 (missed: runs now)" in daemon.log.read_text()
        )
        # a new hive never pruned: the first start catches up, and the run is stamped
        wait_for(lambda: "retention: 0 tags pruned" in daemon.log.read_text())
        assert (tmp_path / "hive" / "run" / "retention.last-run").is_file()
    finally:
        assert daemon.stop() == 0
    monkeypatch.setenv("HYPERHIVE_RETENTION_PRUNE_AT", "4:15")
    never_serve(monkeypatch)
    proc = run_main(tmp_path / "hive", "up", "--port", "0")
    assert proc.returncode == 1
    assert "retention.prune_at must be HH:MM (24 h), not '4:15'" in proc.stderr


def test_the_daily_job_prunes_with_the_settings_of_the_moment(hive: Home, caplog):
    from types import SimpleNamespace

    from hyperhive.daemon.up import Services

    services = SimpleNamespace(hive=SimpleNamespace(home=hive))  # all the job uses
    failed = craft(hive, "manager", F, time.time() - 40 * DAY)
    (hive.root / "hyperhive.toml").write_text("[retention]\nfailed_days = 0\n")
    Services.prune(services)
    assert f"refs/tags/failed/{failed}" in refs_of(hive)
    (hive.root / "hyperhive.toml").write_text("[retention]\nfailed_days = 35\n")
    Services.prune(services)
    assert f"refs/tags/failed/{failed}" not in refs_of(hive)
    craft(hive, "manager", F, time.time() - 40 * DAY)  # a loose tag to pack
    (hive.applied_dir("manager") / "packed-refs.lock").write_text("")
    Services.prune(services)
    assert "retention: manager not pruned: " in caplog.text
    assert "packed-refs.lock exists" in caplog.text


def test_nixos_options_agree_with_the_settings(tmp_path: Path):
    from hyperhive.errors import BadInput

    options = host({}, "m.options.services.hyperhive.retention", tmp_path)
    assert options["failedDays"]["type"] == {"name": "ints.unsigned"}  # 0 = keep forever
    assert options["failedDays"]["default"] == Retention().failed_days
    assert options["pruneAt"]["default"] == Retention().prune_at
    values = ["03:30", "00:00", "23:59", "24:00", "3:30", "12:60", "1230", " 03:30"]
    regex = options["pruneAt"]["type"]["re"]
    in_nix = nix_eval(f"map (v: builtins.match {json.dumps(regex)} v != null) {nix_list(values)}")

    def in_python(value):
        try:
            Retention(prune_at=value).check()
        except BadInput:
            return False
        return True

    assert in_nix == [in_python(v) for v in values] == [True] * 3 + [False] * 5


def nix_list(values: list[str]) -> str:
    return "[ " + " ".join(json.dumps(v) for v in values) + " ]"
