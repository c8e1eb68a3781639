"""`hyperhive …`: the operator's command line.

Exit codes: 0 done; 1 refused (one line on stderr says why); 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hyperhive.errors import HiveError, disk_full
from hyperhive.home import Home, default_home, restrict_umask
from hyperhive.names import DEFAULT_ACCOUNT, OPERATOR, check_agent_name, parse_target
from hyperhive.runtime.kinds import RUNTIMES, get_runtime

if TYPE_CHECKING:
    from hyperhive.broker.messages import Broker
    from hyperhive.workflow import checks
    from hyperhive.workflow.approvals import Approval

# What each command needs it imports itself: the workflow, the broker, the operator's
# accounts and the runtimes' backends cost 0.3 s of imports that `--help`, `mcp` (each
# `claude` turn starts one) and `harness` never use. tests/test_cli_startup.py checks.
DEFAULT_RUNTIME = os.environ.get("HYPERHIVE_RUNTIME") or "local"


def actor() -> str:
    """Who the CLI acts as: recorded in every tag it writes."""
    return os.environ.get("HYPERHIVE_ACTOR") or "operator"


def emit_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def approval_line(a: Approval, check: str = "") -> str:
    from hyperhive.workflow.approvals import when

    if a.pruned_on:  # retention removed every tag: no one to name, only when
        done = f"pruned on {when(a.pruned_on)}"
    else:
        latest = a.states[a.state]
        done = f"{when(latest.time)}  {latest.actor:<10}"
    check = f"check:{check:<10} " if check else ""
    return f"{a.target:<20} {a.state:<9} {check}{done:<32} {a.commit[:12]}  {a.subject}"


def live_checks(home: Home) -> dict[str, dict]:
    """The checks the daemon has queued or running (none when no daemon answers)."""
    from hyperhive.wire.protocol import DaemonUnavailable, call
    from hyperhive.workflow import checks

    try:
        return checks.live_states(call(home.host_socket, {"op": "checks"}, timeout=5))
    except (DaemonUnavailable, HiveError, OSError):
        return {}


def tell_manager(home: Home):
    """How a check run by the CLI tells the manager its result (as the daemon would)."""
    from hyperhive.broker.messages import MANAGER, SYSTEM
    from hyperhive.wire import notify

    broker = _broker(home)

    def tell(body: str) -> None:
        broker.send(SYSTEM, MANAGER, body)
        notify.wrote_messages(home)

    return tell


def check_here(home: Home, name: str, approval_id: int, rerun: bool = True) -> checks.Check | None:
    """Run a check in this process (no daemon answers), printing where its log is; not
    `rerun`: only if no other process recorded one meanwhile (`checks.run_once`)."""
    from hyperhive.settings import load_settings
    from hyperhive.workflow import checks

    runtime = get_runtime(DEFAULT_RUNTIME, home)
    timeout = load_settings(home).checks.timeout_seconds

    def started(_limit: object, path: Path) -> None:
        print(f"checking {name}#{approval_id} here (no daemon runs): {path}", file=sys.stderr)

    check = checks.run if rerun else checks.run_once
    return check(home, name, approval_id, runtime, timeout, tell_manager(home), started)


def await_check(home: Home, name: str, approval_id: int) -> None:
    """A proposal without a check result: wait for the daemon's check of it (queued or
    running), or run it here when no daemon answers. The result then decides; a check
    that does not end within `checks.timeout_seconds` (and a minute) leaves it unfinished."""
    from hyperhive.settings import load_settings
    from hyperhive.wire.protocol import DaemonUnavailable, call
    from hyperhive.workflow import checks

    request = {"op": "check", "agent": name, "id": approval_id}
    deadline = time.monotonic() + load_settings(home).checks.timeout_seconds + 60
    told = False
    while checks.latest(home, name, approval_id) is None and time.monotonic() < deadline:
        try:
            reply = call(home.host_socket, request)
        except DaemonUnavailable:
            if (c := check_here(home, name, approval_id, rerun=False)) is not None:
                print(check_result_line(c), file=sys.stderr)
            return
        if reply["state"] == "done":
            return
        if not told:
            print(
                f"waiting for the check of {name}#{approval_id} ({reply['state']})…",
                file=sys.stderr,
            )
            told = True
        time.sleep(0.1)


def check_result_line(c: checks.Check) -> str:
    line = f"{c.tag.removeprefix('refs/tags/')}: {c.result} in {c.duration}"
    return line + (f": {c.reason}" if c.reason else "")


def cmd_init(args: argparse.Namespace) -> int:
    from hyperhive.agents import init_hive

    proposal = init_hive(args.home, get_runtime(DEFAULT_RUNTIME, args.home), actor())
    if proposal is None:
        print(f"hive already initialized at {args.home.root}")
    else:
        print(f"initialized hive at {args.home.root}")
        print(f"proposed {proposal.target}: `hyperhive approve {proposal.target}` deploys it")
    return 0


def cmd_agent_create(args: argparse.Namespace) -> int:
    from hyperhive.agents import create_agent

    proposal = create_agent(args.home, args.name, get_runtime(DEFAULT_RUNTIME, args.home), actor())
    print(f"created agent {args.name}; proposed {proposal.target}")
    return 0


def cmd_agent_destroy(args: argparse.Namespace) -> int:
    from hyperhive.spawn import destroy

    result = destroy(
        args.home, args.name, get_runtime(DEFAULT_RUNTIME, args.home), args.purge, actor()
    )
    for approval_id in result["denied"]:
        print(f"denied pending {args.name}#{approval_id}")
    if result["purged"]:
        print(f"destroyed agent {args.name}; its state, repos and logs are deleted")
    else:
        print(
            f"destroyed agent {args.name}; its state and repos are kept "
            f"(`hyperhive agent destroy {args.name} --purge` deletes them)"
        )
    return 0


def cmd_agent_list(args: argparse.Namespace) -> int:
    from hyperhive.agents import list_agents

    agents = list_agents(args.home, get_runtime(DEFAULT_RUNTIME, args.home))
    if args.json:
        emit_json(agents)
        return 0
    for a in agents:
        commit = (a["deployed_commit"] or "-")[:12]
        pending = ",".join(f"#{i}" for i in a["pending"]) or "-"
        print(f"{a['name']:<32} {a['runtime']['state']:<13} {commit:<12}  pending: {pending}")
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    from hyperhive.workflow.approvals import Approvals, follows_id

    follows = follows_id(args.name, args.follows)
    approvals = Approvals(args.home, args.name)
    if args.commit is None:  # HEAD: say so if a push proposed something newer than it
        for a in approvals.pending_ahead_of_head():
            print(
                f"warning: HEAD of {args.name}'s config repo is behind {a.target} "
                f"({a.commit[:12]}, pushed over git): `git pull` it first, or propose "
                f"{a.commit[:12]}",
                file=sys.stderr,
            )
    approval = approvals.propose(
        args.commit or "HEAD", actor(), args.reason, rollback=args.rollback, follows=follows
    )
    print(approval.target)
    return 0


def _approvals(home: Home, pending_only: bool) -> list[Approval]:
    from hyperhive.workflow.approvals import Approvals

    home.require()
    return [
        a
        for n in home.agent_names()
        for a in Approvals(home, n).all(pending_only, with_pruned=not pending_only)
    ]


def cmd_approvals(args: argparse.Namespace) -> int:
    from hyperhive.workflow import checks, policydiff

    found = _approvals(args.home, pending_only=not args.all)
    live = live_checks(args.home)
    shown = [
        {**a.to_json(), "check": checks.check_json(args.home, a.agent, a.id, live.get(a.target))}
        for a in found
    ]
    if args.json:
        for data, a in zip(shown, found, strict=True):
            data["policy_diff"] = policydiff.of_approval(args.home, a)
        emit_json(shown)
    else:
        for a, data in zip(found, shown, strict=True):
            print(approval_line(a, data["check"]["state"]))
            if not args.all:
                print(policy_line(policydiff.of_approval(args.home, a)))
    return 0


def policy_line(diff: dict | None) -> str:
    """The policy diff of a pending approval in one line: what widens first."""
    from hyperhive.workflow import policydiff

    if diff is None:
        return "  policy: -"
    if diff["error"]:
        return f"  policy: {diff['error']}"
    rows = sorted(diff["rows"], key=lambda r: r["effect"] != policydiff.WIDENS)
    if not rows:
        return "  policy: unchanged"
    verdict = "WIDENS" if diff["widens"] else "narrows" if diff["narrows"] else "changes"
    shown = "; ".join(f"{r['field']} {r['change']}" for r in rows[:6])
    more = f" (+{len(rows) - 6} more)" if len(rows) > 6 else ""
    return f"  policy {verdict}: {shown}{more}"


def _report_hooks(home: Home, a: Approval) -> None:
    from hyperhive.workflow import hooks

    failed = [r for r in hooks.runs(home, a.agent) if r.exit and hooks.concerns(r, a.id)]
    for r in failed:
        print(
            f"warning: post-receive exited {r.exit} (see `hyperhive history {a.agent}`)",
            file=sys.stderr,
        )


def cmd_approve(args: argparse.Namespace) -> int:
    from hyperhive.workflow import checks
    from hyperhive.workflow.approvals import Approvals

    name, approval_id = args.target
    home = args.home
    pending = Approvals(home, name).get(approval_id).state == "proposal"
    if pending and not args.force and checks.latest(home, name, approval_id) is None:
        await_check(home, name, approval_id)
    approval = checks.approve(home, name, approval_id, actor(), args.force)
    print(f"approved {approval.target}")
    if check := approval.states["approved"].trailers.get("Check", ""):
        print(f"check: {check}", file=sys.stderr)
    _report_hooks(args.home, approval)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run a proposal's check again: on the daemon when one runs, else here."""
    from hyperhive.wire.protocol import DaemonUnavailable, call
    from hyperhive.workflow import checks
    from hyperhive.workflow.approvals import Approvals

    name, approval_id = args.target
    Approvals(args.home, name).get(approval_id)  # an unknown id is refused first
    request = {"op": "check", "agent": name, "id": approval_id, "rerun": True}
    try:
        reply = call(args.home.host_socket, request)
    except DaemonUnavailable:
        c = check_here(args.home, name, approval_id)
        if c is None:
            print(f"hyperhive: the check of {name}#{approval_id} was dropped", file=sys.stderr)
            return 1
        print(check_result_line(c))
        if c.result != checks.PASSED:
            for line in c.tail[-10:]:
                print(f"  | {line}", file=sys.stderr)
        return 0 if c.result == checks.PASSED else 1
    where = reply["state"] + (f" ({reply['ahead']} ahead)" if "ahead" in reply else "")
    print(f"check of {name}#{approval_id} {where} on the daemon")
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    from hyperhive.workflow.approvals import Approvals

    name, approval_id = args.target
    approval = Approvals(args.home, name).deny(approval_id, actor(), args.reason)
    print(f"denied {approval.target}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from hyperhive.wire.protocol import DaemonUnavailable, call

    name, approval_id = args.target
    if not args.here:
        request = {"op": "deploy", "agent": name, "id": approval_id}
        try:
            reply = call(args.home.host_socket, request)
        except DaemonUnavailable:
            pass  # no daemon: build in this process
        else:  # what the post-receive hook runs: queued without importing the workflow
            print(f"queued {name}#{approval_id} on the daemon ({reply['ahead']} ahead)")
            return 0
    from hyperhive.workflow.deploy import deploy
    from hyperhive.workflow.states import State

    approval = deploy(args.home, name, approval_id, get_runtime(args.runtime, args.home))
    if approval.state == State.DEPLOYED:
        print(f"deployed {approval.target} {approval.commit}")
        return 0
    reason = approval.states[State.FAILED].trailers.get("Reason", "")
    print(f"{approval.target} failed: {reason}", file=sys.stderr)
    return 1


def cmd_history(args: argparse.Namespace) -> int:
    from hyperhive.workflow import checks, hooks
    from hyperhive.workflow.approvals import Approvals, when

    approvals = Approvals(args.home, args.name).all(with_pruned=True)
    runs = hooks.runs(args.home, args.name)
    live = live_checks(args.home)
    if args.json:
        emit_json(checks.history_json(args.home, args.name, live))
        return 0
    recorded = checks.recorded(args.home, args.name)
    for a in approvals:
        if a.pruned_on:
            print(f"{a.target}  pruned on {when(a.pruned_on)}, final state {a.state}")
        else:
            print(f"{a.target}  {a.state}  {a.commit[:12]}")
        for state, gone in a.pruned_history():  # records older than their tag copies
            print(f"  {state:<9} {when(gone.tagged)}  pruned on {when(gone.pruned)}")
        for state, tag in a.history():
            extra = "  ".join(f"{k}: {v}" for k, v in tag.trailers.items() if k != "Actor")
            if gone := a.pruned.get(state):
                extra += f"  (tag pruned on {when(gone.pruned)})"
            print(f"  {state:<9} {when(tag.time)}  {tag.actor:<10} {extra}")
        for c in recorded.get(a.id, []):
            print(f"  {'check':<9} {when(c.time)}  {c.result:<10} {check_result_line(c)}")
        if a.target in live:
            print(f"  {'check':<9} {live[a.target]['state']} on the daemon")
        for r in runs:
            if r.exit and hooks.concerns(r, a.id):
                last = r.tail[-1] if r.tail else ""
                print(f"  hook      {when(r.time)}  post-receive exited {r.exit}: {last}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from hyperhive.settings import load_settings
    from hyperhive.workflow import retention
    from hyperhive.workflow.approvals import when

    days = args.failed_days
    if days is None:
        days = load_settings(args.home).retention.failed_days
    report = retention.prune(args.home, days, dry_run=args.dry_run)
    if args.json:
        emit_json(report.to_json())
    else:
        verb = "would remove" if args.dry_run else "removed"
        for t in report.removed:
            print(f"{verb} {t.agent} {t.tag}  {t.commit[:12]}  tagged {when(t.tagged)}")
        for path in report.logs:
            print(f"{verb} build log {path}")
        if report.record:
            print(f"recorded in meta.git {report.record[:12]}")
        elif not report.removed:
            print("nothing to prune")
    for name, error in report.errors.items():
        print(f"hyperhive: {name} not pruned: {error}", file=sys.stderr)
    return 1 if report.errors else 0


def cmd_meta_log(args: argparse.Namespace) -> int:
    from hyperhive.workflow import meta
    from hyperhive.workflow.approvals import when

    entries = list(meta.log_entries(args.home))
    if args.json:
        emit_json([e.to_json() for e in entries])
        return 0
    for e in entries:
        head = f"{when(e.time)}  {e.commit[:12]}  {e.kind:<7}"
        data = e.to_json()
        if e.kind == "deploy":
            print(f"{head}  {data['agent']}#{data['approval']}  {(data['revision'] or '-')[:12]}")
        elif e.kind == "prune":
            print(f"{head}  {len(e.pruned)} tags")
            for t in e.pruned:
                print(f"    {t.agent} {t.tag}  {t.commit[:12]}  tagged {when(t.tagged)}")
        else:
            print(f"{head}  {e.subject}")
    return 0


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        password = getpass.getpass(prompt)
        again = getpass.getpass("again: ")
    except EOFError:
        raise HiveError("no password given (--password-stdin reads one from stdin)") from None
    if again != password:
        raise HiveError("the passwords differ; nothing changed")
    return password


def _ended(n: int) -> str:
    return f"{n} session{'s' if n != 1 else ''} ended"


def cmd_set_password(args: argparse.Namespace) -> int:
    from hyperhive import operator

    operator.require_account(args.home, args.account)
    password = _read_password(args, f"new password of {args.account}: ")
    ended = operator.set_password(args.home, password, args.account)
    print(f"password of {args.account} set; {_ended(ended)}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from hyperhive import operator

    print(operator.token(args.home.require(), rotate=args.rotate, account=args.account))
    return 0


def cmd_operator_add(args: argparse.Namespace) -> int:
    from hyperhive import operator

    operator.check_new_account(args.home, args.name)
    operator.add(args.home, args.name, _read_password(args, f"password of {args.name}: "))
    print(
        f"added operator account {args.name} (its token: `hyperhive operator token "
        f"--account {args.name}`)"
    )
    return 0


def cmd_operator_remove(args: argparse.Namespace) -> int:
    from hyperhive import operator

    ended = operator.remove(args.home, args.name)
    print(f"removed operator account {args.name}; {_ended(ended)}")
    return 0


def cmd_operator_list(args: argparse.Namespace) -> int:
    from hyperhive import operator, sessions
    from hyperhive.settings import load_settings

    found = operator.accounts(args.home)
    live = sessions.live(args.home, sessions.Lifetime.of(load_settings(args.home).forge))
    for a in found:
        a["sessions"] = live.get(a["name"], 0)
    if args.json:
        emit_json(found)
        return 0
    for a in found:
        creds = ", ".join(k for k in ("password", "token") if a[k]) or "no password or token"
        print(f"{a['name']:<32} {creds:<20} {a['sessions']} live sessions")
    return 0


def cmd_operator_logout_all(args: argparse.Namespace) -> int:
    from hyperhive import operator, sessions

    args.home.require()
    if args.account:
        ended = sessions.end_account(args.home, operator.require_account(args.home, args.account))
    else:
        ended = sessions.end_all(args.home)
    print(_ended(ended))
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    from hyperhive import tokens

    token_id, token = tokens.issue(args.home, args.name, actor())
    if args.state:
        path = tokens.write_state_token(args.home, args.name, token)
        print(f"issued token #{token_id} for {args.name} into {path}")
    else:
        print(f"issued token #{token_id} for {args.name}; it is shown only now", file=sys.stderr)
        print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from hyperhive import tokens
    from hyperhive.workflow.approvals import when

    found = tokens.listing(args.home)
    if args.json:
        emit_json(found)
        return 0
    if not found:
        print("no agent tokens (the operator's is `hyperhive operator token`)")
    for t in found:
        state = "active"
        if t["revoked_at"] is not None:
            state = f"revoked {when(int(t['revoked_at']))} by {t['revoked_by']}"
        issued = f"issued {when(int(t['created_at']))} by {t['created_by']}"
        print(f"#{t['id']:<5} {t['agent']:<32} {issued:<45} {state}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from hyperhive import tokens

    revoked = tokens.revoke(args.home, args.id, actor())
    print(f"revoked token #{revoked['id']} of {revoked['agent']}")
    return 0


def _broker(home: Home) -> Broker:
    from hyperhive.broker.messages import Broker
    from hyperhive.policy import deployed_policy

    home.require()
    return Broker(home, lambda name: deployed_policy(home, name))


def _message_line(m: dict) -> str:
    from hyperhive.workflow.approvals import when

    return f"#{m['id']:<6} {when(int(m['time']))}  {m['from']} -> {m['to']}: {m['body']}"


def cmd_send(args: argparse.Namespace) -> int:
    from hyperhive.wire import notify

    if args.sender != OPERATOR:
        args.home.require_agent(args.sender)
    message_id = _broker(args.home).send(args.sender, args.to, args.text)
    notify.wrote_messages(args.home)
    print(f"sent #{message_id}")
    return 0


def cmd_inbox(args: argparse.Namespace) -> int:
    if args.name != OPERATOR:
        args.home.require_agent(args.name)
    if args.dead:
        return _dead_letters(args)
    if args.before is not None or args.limit is not None:
        raise HiveError("--limit and --before page the dead letters: use them with --dead")
    messages = _broker(args.home).inbox(args.name)
    if args.json:
        emit_json(messages)
    else:
        for m in messages:
            print(_message_line(m))
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from hyperhive.broker.messages import DEAD_PAGE
    from hyperhive.workflow.approvals import when

    limit = DEAD_PAGE if args.limit is None else args.limit
    page = _broker(args.home).dead(args.name, limit, args.before)
    if args.json:
        emit_json(page)
        return 0
    for m in page["messages"]:
        print(f"{_message_line(m)}\n        given up {when(int(m['dead_at']))}: {m['reason']}")
    if page["next"] is not None:
        print(f"(older: hyperhive inbox {args.name} --dead --before {page['next']})")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    from hyperhive.wire import notify

    args.home.require_agent(args.name)
    message = _broker(args.home).requeue_dead(args.name, args.id)
    notify.wrote_messages(args.home)
    notify.changed(args.home, args.name, "dead")
    print(f"requeued #{message['id']} from {message['from']} into {args.name}'s inbox")
    return 0


def cmd_questions(args: argparse.Namespace) -> int:
    from hyperhive.broker import questions
    from hyperhive.workflow.approvals import when

    found = questions.pending(_broker(args.home))
    if args.json:
        emit_json(found)
    else:
        for q in found:
            options = f"  [{' | '.join(q['options'])}]" if q["options"] else ""
            print(
                f"#{q['id']:<5} {when(int(q['asked_at']))}  {q['asker']}: {q['question']}{options}"
            )
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from hyperhive.broker import questions
    from hyperhive.wire import notify

    questions.answer(_broker(args.home), args.id, args.text, actor())
    notify.wrote_messages(args.home)
    print(f"answered question #{args.id}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from forge_ui import create_app
    from hyperhive.daemon.up import serve

    return serve(args.home, args.runtime, args.bind, args.port, create_app)


def cmd_mcp(args: argparse.Namespace) -> int:
    from hyperhive.mcp import serve

    return serve(args.socket)


def cmd_harness(args: argparse.Namespace) -> int:
    from hyperhive.harness.loop import Config, main

    config = Config(
        socket=args.socket,
        state=args.state,
        etc=args.etc,
        retry_seconds=args.retry_seconds,
        exit_with_parent=args.exit_with_parent or args.lifeline is not None,
        lifeline=args.lifeline,
    )
    return main(config)


def absolute_path(text: str) -> Path:
    return Path(text).absolute()


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return value


def fd_number(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 2 < int(text) < 2**31):
        raise argparse.ArgumentTypeError(f"expected a file descriptor number above 2, not {text!r}")
    return int(text)


def page_size(text: str) -> int:
    from hyperhive.broker.messages import MAX_DEAD_PAGE

    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_DEAD_PAGE):
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_DEAD_PAGE}, not {text!r}")
    return int(text)


def message_id(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2**63):
        raise argparse.ArgumentTypeError(f"expected a message id (a positive number), not {text!r}")
    return int(text)


def port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"expected a port number (0 to 65535), not {text!r}")
    return int(text)


def target(text: str) -> tuple[str, int]:
    try:
        return parse_target(text)
    except HiveError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def agent_name(text: str) -> str:
    try:
        return check_agent_name(text)
    except HiveError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def account_name(text: str) -> str:
    from hyperhive import operator

    try:
        return operator.check_account_name(text)
    except HiveError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def recipient(text: str) -> str:
    return text if text == OPERATOR else agent_name(text)


def days(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of days (0 or more), not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        type=lambda p: Home(Path(p).absolute()),
        default=argparse.SUPPRESS,
        help="hive home (default: $HYPERHIVE_HOME or ~/.local/share/hyperhive)",
    )
    parser = argparse.ArgumentParser(prog="hyperhive", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, parent=sub, details=None):
        """A subcommand: `help` is its line in `hyperhive --help`; `details`, its --help
        description, is also its row in the README's CLI table (scripts/cli_table.py)."""
        p = parent.add_parser(name, parents=[common], help=help, description=details or help)
        p.set_defaults(func=func)
        return p

    command(
        "init",
        cmd_init,
        "create the hive's home with a manager agent",
        details="create the home, `meta.git` and the `manager` agent (proposes `manager#1`)",
    )

    agent = sub.add_parser("agent", help="create, list and destroy agents").add_subparsers(
        dest="agent_command", required=True, metavar="COMMAND"
    )
    p = command(
        "create",
        cmd_agent_create,
        "create an agent and propose its first config",
        agent,
        details="create an agent's repos and propose its first config",
    )
    p.add_argument("name", type=agent_name)
    p = command(
        "list",
        cmd_agent_list,
        "list agents with their deployed revision",
        agent,
        details=(
            "agents with runtime state (`running`, `failing` or `crash-looping` with the cause, "
            "`stopped`, …), deployed commit, pending ids"
        ),
    )
    p.add_argument("--json", action="store_true")
    p = command(
        "destroy",
        cmd_agent_destroy,
        "stop and remove an agent; keep its state and repos",
        agent,
        details=(
            "stop and remove an agent: its pending approvals are denied, its tokens revoked, "
            "`meta.git` drops its pin; its state and repos are kept (and its name taken) unless "
            "`--purge` deletes them with its logs; the manager cannot be destroyed"
        ),
    )
    p.add_argument("name", type=agent_name)
    p.add_argument("--purge", action="store_true", help="delete its state, repos and logs too")

    p = command(
        "propose",
        cmd_propose,
        "submit a commit of an agent's config for approval",
        details=(
            "propose COMMIT (default: HEAD of `agents/NAME/config`, with a warning if a "
            'pushed proposal is ahead of it); prints `NAME#ID`; "no new changes" and an '
            "unsaid rollback exit 1; `--follows` names the earlier approval it answers (its "
            "review comments, its denial): the `Follows:` trailer, and its review page shows "
            "the interdiff"
        ),
    )
    p.add_argument("name", type=agent_name)
    p.add_argument(
        "commit",
        nargs="?",
        metavar="COMMIT",
        help="default: HEAD of its config repo",
    )
    p.add_argument("--reason", metavar="TEXT", help="why, recorded in the proposal tag")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="the commit is an ancestor of the deployed one: going back is meant",
    )
    p.add_argument(
        "--follows",
        metavar="NAME#ID",
        help="the approval this one answers (its comments, its denial): `Follows:` trailer",
    )

    p = command(
        "approvals",
        cmd_approvals,
        "list pending approvals (--all: every approval)",
        details=(
            "pending approvals with their check (`check:passed`, `failed`, `queued`, "
            "`running`, `unfinished`), each with what it does to the agent's policy on the "
            'line below (`--all`: every approval, a pruned one as "pruned on DATE" with its '
            "final state)"
        ),
    )
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")

    p = command(
        "approve",
        cmd_approve,
        "approve NAME#ID; the post-receive hook deploys it",
        details=(
            "approve; the hook starts the deploy. Its check (`checked/ID`) must have passed: "
            'without `--force` ("approve anyway", recorded in the tag as `Check: failed, '
            "overridden` or `Check: unfinished, overridden`) a failed check is refused (exit "
            "1), and one queued or running on the daemon is waited for (with no daemon, it is "
            "run here first)"
        ),
    )
    p.add_argument("target", type=target, metavar="NAME#ID")
    p.add_argument(
        "--force",
        action="store_true",
        help="approve anyway when its check failed or has not finished (recorded in the tag)",
    )

    p = command(
        "check",
        cmd_check,
        "run the check of NAME#ID again (e.g. after nixpkgs moved)",
        details=(
            "run the check of a proposal again (a new tag `checked/ID.N`): queued on the "
            "daemon if one runs, else here (exit 1 when it fails)"
        ),
    )
    p.add_argument("target", type=target, metavar="NAME#ID")

    p = command(
        "deny",
        cmd_deny,
        "deny NAME#ID with a reason",
        details="deny, with the reason recorded in the tag",
    )
    p.add_argument("target", type=target, metavar="NAME#ID")
    p.add_argument("--reason", metavar="TEXT", required=True)

    p = command(
        "deploy",
        cmd_deploy,
        "build an approved NAME#ID now (what the hook calls)",
        details=(
            "build an approved id (what the hook calls); queued on the daemon if one runs, "
            "`--here` builds in this process"
        ),
    )
    p.add_argument("target", type=target, metavar="NAME#ID")
    p.add_argument("--runtime", choices=sorted(RUNTIMES), default=DEFAULT_RUNTIME)
    p.add_argument(
        "--here",
        action="store_true",
        help="build in this process even when a daemon runs (default: queue on the daemon)",
    )

    p = command(
        "history",
        cmd_history,
        "every approval of an agent with each state",
        details=(
            "every approval with each state, actor, time, reason and failed hook runs; a pruned "
            'one as "pruned on DATE, final state STATE"'
        ),
    )
    p.add_argument("name", type=agent_name)
    p.add_argument("--json", action="store_true")

    p = command(
        "send",
        cmd_send,
        "send a message as FROM (an agent or operator), for testing",
        details=(
            "send a message as FROM (an agent or `operator`), for testing; FROM's policy applies"
        ),
    )
    p.add_argument("sender", metavar="FROM", type=recipient)
    p.add_argument("to", metavar="TO", type=recipient)
    p.add_argument("text", metavar="TEXT")

    p = command(
        "inbox",
        cmd_inbox,
        "messages waiting for NAME (an agent or operator)",
        details=(
            "messages waiting for NAME (an agent or `operator`), without taking them; `--dead`: "
            "its dead letters instead, newest first (50, at most 500 at a time; `--before` the "
            "id the page before ended at): messages given up after 3 failed turns, with why"
        ),
    )
    p.add_argument("name", type=recipient)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--dead",
        action="store_true",
        help="its dead letters instead: messages given up after their failed turns, newest "
        "first (`hyperhive requeue NAME ID` hands one back)",
    )
    p.add_argument(
        "--limit", type=page_size, metavar="N", help="with --dead: at most N (default 50)"
    )
    p.add_argument(
        "--before", type=message_id, metavar="ID", help="with --dead: those older than #ID"
    )

    p = command(
        "requeue",
        cmd_requeue,
        "hand dead letter ID back to agent NAME's inbox",
        details=(
            "hand dead letter ID back to NAME's inbox, at its old place; an id that is not one "
            "of NAME's dead letters is refused (exit 1)"
        ),
    )
    p.add_argument("name", type=agent_name)
    p.add_argument("id", type=message_id)

    p = command(
        "questions",
        cmd_questions,
        "questions waiting for the operator's answer",
        details="questions agents asked the operator, unanswered",
    )
    p.add_argument("--json", action="store_true")

    p = command(
        "answer",
        cmd_answer,
        "answer question ID; the answer goes to the asker's inbox",
        details="answer a question; the answer arrives in the asker's inbox",
    )
    p.add_argument("id", type=int)
    p.add_argument("text", metavar="TEXT")

    p = command(
        "prune",
        cmd_prune,
        "apply tag retention to every agent's applied repo now",
        details=(
            "apply tag retention now (the daemon does it daily): prints each tag and build log "
            "removed (`--dry-run`: that would be); exit 1 if an agent had to be skipped"
        ),
    )
    p.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    p.add_argument(
        "--failed-days",
        type=days,
        metavar="N",
        help="keep failed/denied tags N days, 0 forever (default: retention.failed_days)",
    )
    p.add_argument("--json", action="store_true")

    meta_cmd = sub.add_parser("meta", help="the meta repo's deploy log").add_subparsers(
        dest="meta_command", required=True, metavar="COMMAND"
    )
    p = command(
        "log",
        cmd_meta_log,
        "deploys, destroys and prune records, newest first",
        meta_cmd,
        details=(
            "the meta repo, newest first: deploys (agent, approval, revision, time), destroys "
            "and prune records (each tag removed)"
        ),
    )
    p.add_argument("--json", action="store_true")

    op = sub.add_parser(
        "operator", help="operator accounts: passwords, API tokens, forge sessions"
    ).add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    account = {
        "type": account_name,
        "default": DEFAULT_ACCOUNT,
        "metavar": "NAME",
        "help": f"the operator account (default: {DEFAULT_ACCOUNT})",
    }
    p = command(
        "set-password",
        cmd_set_password,
        "set an account's password; ends its sessions",
        op,
        details=(
            "set an operator account's forge password (scrypt hash in `operator.json`; default "
            "account `operator`); ends that account's forge sessions"
        ),
    )
    p.add_argument("--account", **account)
    p.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    p = command(
        "token",
        cmd_token,
        "print an account's bearer token (git, JSON API)",
        op,
        details=(
            "print an account's bearer token (JSON API, git remote, login), made on first use; "
            "`--rotate` replaces it and ends the account's sessions"
        ),
    )
    p.add_argument("--account", **account)
    p.add_argument("--rotate", action="store_true", help="replace it; ends its sessions")
    p = command(
        "add",
        cmd_operator_add,
        "add an operator account with its password",
        op,
        details=(
            "add an operator account with its own password (asked twice, or one line from stdin) "
            "and, on first `operator token --account NAME`, its own token; the tags it writes "
            "name it"
        ),
    )
    p.add_argument("name", type=account_name)
    p.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    p = command(
        "remove",
        cmd_operator_remove,
        "remove an account; ends its sessions",
        op,
        details=(
            "remove an account: its sessions end, its token stops working; never the last account"
        ),
    )
    p.add_argument("name", type=account_name)
    p = command(
        "list",
        cmd_operator_list,
        "operator accounts with their live sessions",
        op,
        details=(
            "the accounts: whether each has a password and a token, how many live forge sessions "
            '(`--json`: `[{"name", "password", "token", "created_at", "sessions"}]`)'
        ),
    )
    p.add_argument("--json", action="store_true")
    p = command(
        "logout-all",
        cmd_operator_logout_all,
        "end every forge session",
        op,
        details="end every forge session (or one account's) at once, also in the running daemon",
    )
    p.add_argument(
        "--account", type=account_name, metavar="NAME", help="only this account's sessions"
    )

    tok = sub.add_parser("token", help="agents' tokens for the git remote").add_subparsers(
        dest="token_command", required=True, metavar="COMMAND"
    )
    p = command(
        "issue",
        cmd_token_issue,
        "issue a git token for agent NAME and print it",
        tok,
        details=(
            "issue agent NAME a token for the git remote and print it (`--state`: write it to "
            "its `/state/hyperhive-token` instead)"
        ),
    )
    p.add_argument("name", type=agent_name)
    p.add_argument(
        "--state",
        action="store_true",
        help="write it into the agent's state (/state/hyperhive-token) instead of printing it",
    )
    p = command(
        "list",
        cmd_token_list,
        "every token issued, active or revoked",
        tok,
        details="every token issued: id, agent, who issued it when, active or revoked",
    )
    p.add_argument("--json", action="store_true")
    p = command(
        "revoke",
        cmd_token_revoke,
        "revoke token ID: requests with it get 401",
        tok,
        details="revoke a token for good: requests with it get 401",
    )
    p.add_argument("id", type=int)

    p = command(
        "up",
        cmd_up,
        "run the daemon: build worker and web server",
        details=(
            "the daemon: the forge (gunicorn), build worker, `run/host.sock`; SIGINT/SIGTERM "
            "stop it cleanly; with `--runtime local` it first checks that `bwrap` can make an "
            "agent's sandbox here, and refuses in one line otherwise (install `bubblewrap`, or "
            "set `[local] sandbox = false`); at its start it logs each deployed agent whose "
            "`claude` cannot be found (also a dashboard banner)"
        ),
    )
    p.add_argument("--runtime", choices=sorted(RUNTIMES), default=DEFAULT_RUNTIME)
    p.add_argument("--bind", metavar="ADDRESS", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8420, help="0: any free port (default: 8420)")

    p = command(
        "mcp",
        cmd_mcp,
        "stdio MCP server for an agent, forwarding to its socket",
        details=(
            "the stdio MCP server `claude` starts for an agent: each tool call goes as one JSON "
            "line to the agent's socket, which is its identity"
        ),
    )
    p.add_argument(
        "--socket",
        type=lambda p: Path(p).absolute(),
        metavar="PATH",
        required=True,
        help="the agent's socket (in a container: /run/hyperhive/agent.sock)",
    )

    p = command(
        "harness",
        cmd_harness,
        "run an agent's turn loop (what its container runs)",
        details=(
            "an agent's turn loop: waits for its messages and runs one `claude -p` turn per "
            "batch (what each container runs, defaults `/run/hyperhive/agent.sock`, `/state`, "
            "`/etc/hyperhive`, a failed batch retried after 30 s, given up after 3 failed turns "
            "as a dead letter; `--exit-with-parent`, the local runtime's, ends it with the "
            "process that started it: `--lifeline FD` names an inherited pipe whose write end "
            "only the starter holds, so its end-of-file ends the harness also when the starter "
            "died before it ran; without one, the parent death signal; the `claude` it runs and "
            "its notes compaction threshold are the agent's policy, `hyperhive.claude` (default "
            "`claude` on PATH) and `hyperhive.notesCompactBytes` (default 32768); it runs "
            "`claude --version` at its start and refuses (exit 3) a Claude Code older than "
            "2.1.0, naming the version found; the daemon runs one per deployed agent with the "
            "local runtime)"
        ),
    )
    p.add_argument(
        "--socket",
        type=absolute_path,
        default=Path("/run/hyperhive/agent.sock"),
        metavar="PATH",
        help="the agent's socket (default: /run/hyperhive/agent.sock)",
    )
    p.add_argument(
        "--state",
        type=absolute_path,
        default=Path("/state"),
        metavar="DIR",
        help="its state directory: notes.md, the claude session (default: /state)",
    )
    p.add_argument(
        "--etc",
        type=absolute_path,
        default=Path("/etc/hyperhive"),
        metavar="DIR",
        help="where policy.json and extra-mcp.json are (default: /etc/hyperhive); the "
        "claude it runs and the notes compaction threshold are the policy's",
    )
    p.add_argument(
        "--retry-seconds",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="a failed batch is retried after this when no message comes (default: 30)",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="end when the process that started it ends (the local runtime)",
    )
    p.add_argument(
        "--lifeline",
        type=fd_number,
        metavar="FD",
        help="with --exit-with-parent: an inherited pipe whose write end only the starter "
        "holds; its end-of-file ends the harness, also when the starter died before it ran",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    restrict_umask()
    args = build_parser().parse_args(argv)
    if not hasattr(args, "home"):
        args.home = Home(default_home().absolute())
    import logging  # after the parse: `--help` and a usage error need none

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("hyperhive").setLevel(logging.INFO)
    try:
        return args.func(args)
    except HiveError as e:
        print(f"hyperhive: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if (full := disk_full(e)) is None:
            raise
        print(f"hyperhive: {full}", file=sys.stderr)
        return 1
