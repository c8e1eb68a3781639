"""The turn loop: wait for messages, run one `claude` turn per batch, report it, repeat.

- `recv` long-polls the agent's socket with a lease: the messages it returns are written to
  `<state>/.hyperhive/inflight.json`, then acknowledged (`ack`), then the turn runs; the
  file is cleared after it, so a harness stopped or killed mid-turn hands them to the next
  turn after its restart. One stopped between the reply and the file (a signal, a SIGKILL,
  a crash) never acknowledged them: the `release` at the next start, which the harness
  also asks after a recv that failed, hands them back to the inbox, and a message the
  file already holds (the stop came before the ack) is not added twice. A batch whose
  turn failed is handed again with the next turn (or after `retry_seconds`), at most
  `MAX_ATTEMPTS` turns in all; then it is given up: the daemon marks it dead (`give_up`,
  with the last error), where the operator sees it and can requeue it; it leaves
  inflight.json only once the daemon has it.
- A turn: `claude -p --output-format stream-json --verbose [--model M]
  --permission-mode dontAsk --setting-sources= --mcp-config <file> --strict-mcp-config
  --allowedTools … [--disallowedTools Agent Workflow] --append-system-prompt <prompt +
  notes> [--resume SESSION]` (claude_config.py says why each), the prompt on stdin (a
  batch may be larger than one argument may be), `CLAUDE_CONFIG_DIR=<state>/.claude`.
  The session id is kept in `<state>/.hyperhive/session`, so each turn
  continues the conversation. `claude` is the policy's (`hyperhive.claude`, an absolute
  path; null: `claude` on PATH), read with the rest of `policy.json` at every turn.
- The CLI compacts a conversation by itself after a "prompt is too long": a run that
  did so and succeeded is class `compact-retry`. A run that still fails because the
  context is full is retried once: in a fresh session when the CLI already tried to
  compact it (it is never compacted twice), else after a `/compact` of the session,
  judged by the CLI's `compact_result` (a fresh session when that fails); exit class
  `compact-retry` when the retry succeeds; a session still too long after that is
  dropped (the next turn starts a new one). A session claude no longer knows is
  forgotten and the turn rerun fresh. Any other failure is class `failure` with
  claude's exit code and its reason (`terminal_reason`, the API's status) in the log;
  the loop goes on.
- After every turn: a `turn_report` to the daemon (telemetry), then notes compaction
  when `notes.md` is over the policy's `notesCompactBytes` (notes.py).
"""

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hyperhive.errors import HiveError, PolicyUnreadable
from hyperhive.harness import claude_version, notes
from hyperhive.harness.claude_config import (
    PERMISSION_MODE,
    claude_env,
    load_extras,
    permission_args,
    render_claude_config,
)
from hyperhive.harness.events import Run, party_class, short
from hyperhive.harness.prompt import system_prompt, turn_prompt
from hyperhive.policy import allow_subagents, claude_path, notes_compact_bytes
from hyperhive.runtime import lifeline
from hyperhive.wire.protocol import DaemonUnavailable, call

log = logging.getLogger("hyperhive.harness")

MAX_ATTEMPTS = 3  # turns a message is handed to before it is given up
GIVE_UP_BATCH = 100  # ids per give_up call (the broker's MAX_BATCH)
RECV_MARGIN = 30.0  # a recv's socket read outlasts its wait by this much
CALL_TIMEOUT = 30.0
MAX_BACKOFF = 30.0  # seconds between tries to reach a daemon that does not answer
COMPACT_PROMPT = "/compact"
EXIT_UNSUPPORTED_CLAUDE = 3  # the harness's own exit when it refuses the policy's claude
EXIT_CANNOT_RUN = 127  # the exit code reported when claude could not be started
READ_POLL = 0.5  # seconds between looks at a claude whose output is quiet
DEFAULT_CLAUDE = "claude"  # on PATH, when the policy names none


class Stop(BaseException):
    """SIGTERM or SIGINT: leave the loop (a running claude is stopped first). Not an
    Exception, as KeyboardInterrupt is not: raised by the signal handler wherever the
    main thread is, it must not be swallowed there (logging's `emit` turns any Exception
    into a printed "Logging error" and goes on, and the stop was lost)."""


@dataclass(frozen=True)
class Config:
    socket: Path = Path("/run/hyperhive/agent.sock")
    state: Path = Path("/state")
    etc: Path = Path("/etc/hyperhive")
    poll_seconds: float = 60.0  # one recv waits this long for a message
    retry_seconds: float = 30.0  # a failed batch is retried after this, if nothing comes
    turn_timeout: float = 3600.0  # a claude run is killed after this
    linger_seconds: float = 30.0  # a claude still running this long after its result is stopped
    exit_with_parent: bool = False  # the local runtime's harness ends with its daemon
    lifeline: int | None = None  # a pipe's read end whose write end only the starter holds


@dataclass
class Turn:
    """What one turn came to: the report's makings."""

    exit: str = "ok"
    exit_code: int | None = None
    policy: dict | None = None  # the policy the turn ran with; None: unreadable, no turn
    tools: Counter = field(default_factory=Counter)  # the agent's own calls, not denied
    subagent_tools: Counter = field(default_factory=Counter)  # its sub-agents' calls
    denials: Counter = field(default_factory=Counter)  # calls the permissions refused
    sent: Counter = field(default_factory=Counter)
    received: Counter = field(default_factory=Counter)
    cost: float | None = None
    error: str | None = None  # why it failed, for the report (one line is kept)

    def add(self, run: Run, cost: float | None) -> None:
        self.tools.update(run.tools)
        self.subagent_tools.update(run.subagent_tools)
        self.denials.update(run.denials)
        self.sent.update(run.sent)
        self.received.update(run.received)
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost


class Harness:
    def __init__(self, config: Config):
        self.c = config
        self.dir = config.state / ".hyperhive"
        self.notes_path = config.state / notes.NOTES_FILE
        self.me: dict = {}
        self.proc: subprocess.Popen | None = None
        self.supported: dict[str, str] = {}  # claude executable -> its supported version

    def check_claude(self, policy: dict) -> str | None:
        """The version of the policy's claude, once per executable (a store path, or a
        name on PATH, is one CLI); UnsupportedClaude when it is older than the harness
        supports (claude_version.MIN_VERSION) or says no version. None when it cannot run
        at all: its turn then fails as a claude that cannot start does (the agent shows
        `failing`, its messages end as dead letters), and it is checked again next time."""
        claude = policy.get("claude") or DEFAULT_CLAUDE
        if claude not in self.supported:
            try:
                self.supported[claude] = claude_version.require_supported(claude)
            except claude_version.ClaudeNotRunnable as e:
                log.warning("%s", e)
                return None
            log.info("%s is Claude Code %s", claude, self.supported[claude])
        return self.supported[claude]

    # -- the daemon ---------------------------------------------------------------------

    def call(self, request: dict, timeout: float = CALL_TIMEOUT) -> dict:
        return call(self.c.socket, request, timeout=timeout)

    def call_until_answered(self, request: dict) -> dict:
        """`request`, tried until the daemon answers (it may start after the harness, or
        restart under it)."""
        delay = 1.0
        while True:
            try:
                return self.call(request)
            except (DaemonUnavailable, HiveError, OSError, ValueError) as e:
                log.warning(
                    "no answer to %s on %s (%s); retrying in %.0f s",
                    request["op"],
                    self.c.socket,
                    e,
                    delay,
                )
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def connect(self) -> dict:
        self.me = self.call_until_answered({"op": "whoami"})
        return self.me

    def release(self) -> None:
        """Hand back to the inbox what this agent's harness was handed and never
        acknowledged: at the start (a harness before this one died holding it) and after a
        failed recv (its reply may be lost). A harness acks every batch before its next
        recv, so what is still leased then never reached a turn."""
        if released := self.call({"op": "release"}).get("released"):
            log.warning("%d messages handed out, never acknowledged: back in the inbox", released)

    def recv(self, wait: float) -> list[dict]:
        request = {"op": "recv", "wait_seconds": wait, "lease": True}
        reply = self.call(request, timeout=wait + RECV_MARGIN)
        messages = reply.get("messages")
        return messages if isinstance(messages, list) else []

    def record(self, pending: list[dict], new: list[dict]) -> list[dict]:
        """The batch to run: `pending` plus what `recv` returned, written to inflight.json
        and only then acknowledged. A message `pending` already holds (a harness before
        this one wrote it and died before its ack) is not added twice."""
        if not new:
            return pending
        held = {i["message"].get("id") for i in pending}
        items = [*pending, *({"message": m, "attempts": 0} for m in new if m["id"] not in held)]
        self.save_inflight(items)
        self.call_until_answered({"op": "ack", "ids": [m["id"] for m in new]})
        return items

    def report(self, report: dict) -> None:
        try:
            self.call({"op": "turn_report", "report": report})
        except (DaemonUnavailable, HiveError, OSError, ValueError) as e:
            log.warning("turn report not stored: %s", e)

    # -- state kept across restarts -------------------------------------------------------

    def _write(self, name: str, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{name}.new"
        tmp.write_text(text)
        os.replace(tmp, self.dir / name)

    def session(self) -> str | None:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "session").read_text().strip() or None
        return None

    def save_session(self, session_id: str | None) -> None:
        if session_id and session_id != self.session():
            self._write("session", session_id + "\n")

    def forget_session(self) -> None:
        (self.dir / "session").unlink(missing_ok=True)

    def session_cost(self, session: str | None) -> float | None:
        """What `session` had cost by its last run, as the CLI counts it (cumulative):
        only needed for a CLI whose results lack `model_usage_since_last_result`."""
        try:
            saved = json.loads((self.dir / "session-cost").read_text())
            return float(saved["total"]) if saved.get("session") == session else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def run_cost(self, run: Run, session: str | None) -> float | None:
        """The run's own cost; the session's total is kept for the next run's."""
        cost = run.cost(self.session_cost(session) if session else None)
        if run.session_id and (total := run.session_cost()) is not None:
            self._write("session-cost", json.dumps({"session": run.session_id, "total": total}))
        return cost

    def load_inflight(self) -> list[dict]:
        """The messages of the last batch not yet done; those tried too often are given up."""
        try:
            items = json.loads((self.dir / "inflight.json").read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            log.error("cannot read %s (%s): the messages in it are not retried", self.dir, e)
            return []
        keep = [i for i in items if i.get("attempts", 0) < MAX_ATTEMPTS]
        if len(keep) < len(items):  # told once: the file forgets them
            self.give_up([i for i in items if i not in keep])
            self.save_inflight(keep)
        return keep

    def save_inflight(self, items: list[dict]) -> None:
        self._write("inflight.json", json.dumps(items))

    def give_up(self, items: list[dict]) -> None:
        """Hand messages tried MAX_ATTEMPTS times to the daemon as dead letters (the
        operator sees and can requeue them), retried until it answers: the caller drops
        them from inflight.json only after this returns. A refusal (the ids are not this
        agent's: nothing to keep) is logged, and they are dropped."""
        for start in range(0, len(items), GIVE_UP_BATCH):
            chunk = items[start : start + GIVE_UP_BATCH]
            for i in chunk:
                m = i["message"]
                log.error(
                    "giving up on message #%s from %s after %d failed turns: a dead letter",
                    m.get("id"),
                    m.get("from"),
                    i.get("attempts"),
                )
            errors = [i["error"] for i in chunk if i.get("error")]
            reason = f"given up after {MAX_ATTEMPTS} failed turns" + (
                f": {errors[-1]}" if errors else ""
            )
            request = {"op": "give_up", "ids": [i["message"]["id"] for i in chunk]}
            delay = 1.0
            while True:
                try:
                    self.call({**request, "reason": reason})
                    break
                except HiveError as e:  # the daemon answered no
                    log.error("the daemon refused the dead letters: %s", e)
                    break
                except (DaemonUnavailable, OSError, ValueError) as e:
                    log.warning("give_up not answered (%s); retrying in %.0f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    # -- the agent's policy ----------------------------------------------------------------

    def policy(self) -> dict:
        """`<etc>/policy.json`. Unreadable or invalid means no turn: running without the
        restrictions it may hold would silently drop them."""
        path = self.c.etc / "policy.json"
        try:
            policy = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise PolicyUnreadable(f"cannot read the agent's policy {path}: {e}") from None
        if not isinstance(policy, dict):
            raise PolicyUnreadable(f"the agent's policy {path} is not a JSON object")
        try:
            claude_path(policy.get("claude"))
            notes_compact_bytes(policy.get("notesCompactBytes"))
            allow_subagents(policy.get("allowSubagents"))
        except ValueError as e:
            raise PolicyUnreadable(f"the agent's policy {path} is invalid: {e}") from None
        return policy

    # -- running claude --------------------------------------------------------------------

    def base_args(self, policy: dict) -> list[str]:
        claude = policy.get("claude") or DEFAULT_CLAUDE
        args = [claude, "-p", "--output-format", "stream-json", "--verbose"]
        if policy.get("model"):
            args += ["--model", str(policy["model"])]
        return args

    def bare_args(self, policy: dict) -> list[str]:
        """A run with no MCP server and no tool allowed: a `/compact`, a notes compaction."""
        return [
            *self.base_args(policy),
            "--permission-mode",
            PERMISSION_MODE,
            "--setting-sources=",
            "--mcp-config",
            json.dumps({"mcpServers": {}}),
            "--strict-mcp-config",
        ]

    def run_claude(self, args: list[str], prompt: str) -> tuple[int, Run]:
        """Run claude with `prompt` on stdin, folding its output as it arrives. It stays in
        the harness's process group, so a stop of the harness (even a SIGKILL of the group)
        ends it and what it started."""
        run = Run()
        log.info("$ %s", " ".join(short(a, 60) for a in args))
        try:
            self.proc = subprocess.Popen(
                args,
                cwd=self.c.state,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=claude_env(self.c.state),
            )
        except OSError as e:
            log.error("cannot run %s: %s", args[0], e)
            run.other.append(f"cannot run {args[0]}: {e}")
            return EXIT_CANNOT_RUN, run
        proc = self.proc
        writer = threading.Thread(target=self._feed_stdin, args=(proc, prompt), daemon=True)
        writer.start()
        try:
            self._read(proc, run)
            code = proc.wait()
        finally:
            self._end(proc)
            self.proc = None
        if code != 0:
            log.warning("claude exited %d", code)
        return code, run

    def _read(self, proc: subprocess.Popen, run: Run) -> None:
        """Feed claude's output to `run` line by line until it ends, or claude exited and
        its output went quiet (what it left may hold the pipe open), or claude outlives
        its result by `linger_seconds` or the turn by `turn_timeout` (then it is stopped)."""
        fd = proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        timeout_at = time.monotonic() + self.c.turn_timeout
        result_at = exited_at = None
        pending: list[bytes] = []  # the pieces of a line not yet ended (a line may be MBs)
        while True:
            if poller.poll(READ_POLL * 1000):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                *lines, last = chunk.split(b"\n")
                if lines:
                    lines[0], pending = b"".join([*pending, lines[0]]), []
                pending.append(last)
                for line in lines:
                    run.feed(line.decode(errors="replace"))
            elif proc.poll() is not None:
                break
            now = time.monotonic()
            if run.result is not None and result_at is None:
                result_at = now
            if proc.poll() is not None:  # still output: what it left may never stop
                exited_at = exited_at or now
                if now > exited_at + READ_POLL * 4:
                    break
            elif now > timeout_at:
                log.error("claude ran over %g s: stopping it", self.c.turn_timeout)
                proc.kill()
            elif result_at is not None and now > result_at + self.c.linger_seconds:
                log.warning(
                    "claude still runs %g s after its result: stopping it", self.c.linger_seconds
                )
                run.lingered = True
                proc.kill()
        if rest := b"".join(pending):
            run.feed(rest.decode(errors="replace"))

    @staticmethod
    def _feed_stdin(proc: subprocess.Popen, prompt: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(prompt.encode())
            proc.stdin.close()

    @staticmethod
    def _end(proc: subprocess.Popen) -> None:
        """Make sure a claude that is still running (the harness is stopping) ends."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()

    # -- one turn -------------------------------------------------------------------------

    def turn_args(self, policy: dict) -> list[str]:
        extras = load_extras(self.c.etc / "extra-mcp.json")
        config = render_claude_config(self.c.socket, extras)
        self._write("mcp.json", json.dumps(config, indent=2))
        role = self.me.get("role", "agent")
        prompt = system_prompt(role, notes.read(self.notes_path), self.notes_path, sorted(extras))
        return [
            *self.base_args(policy),
            *permission_args(role, extras, policy, self.c.state),
            "--mcp-config",
            str(self.dir / "mcp.json"),
            "--strict-mcp-config",
            "--append-system-prompt",
            prompt,
        ]

    def attempt(self, args: list[str], prompt: str, turn: Turn) -> tuple[int, Run]:
        """One claude run of the turn, continuing the session when there is one."""
        session = self.session()
        code, run = self.run_claude([*args, "--resume", session] if session else args, prompt)
        turn.add(run, self.run_cost(run, session))
        if session and not run.succeeded(code) and run.no_session():
            log.warning("claude no longer knows session %s: starting a new one", session)
            self.forget_session()
            code, run = self.run_claude(args, prompt)
            turn.add(run, self.run_cost(run, None))
        self.save_session(run.session_id)
        return code, run

    def compact_session(self, policy: dict, turn: Turn) -> bool:
        """`/compact` the session (no MCP server, no tool); if that fails, the next run
        starts afresh. Success is the CLI's `compact_result`: a failed compaction still
        ends 0 with `is_error` false ("Compaction failed · …", "Not enough messages")."""
        session = self.session()
        if session:
            args = [*self.bare_args(policy), "--resume", session]
            code, run = self.run_claude(args, COMPACT_PROMPT)
            turn.add(run, self.run_cost(run, session))
            if run.succeeded(code) and run.compacted():
                self.save_session(run.session_id)
                log.info("session %s compacted", run.session_id or session)
                return True
            log.warning("could not compact the session: %s", run.failure_reason())
        log.warning("the retry starts a new session")
        self.forget_session()
        return False

    def turn(self, messages: list[dict], retried: set[int]) -> Turn:
        turn = Turn()
        try:
            policy = self.policy()
            self.check_claude(policy)  # the policy may name another claude since the start
        except (PolicyUnreadable, claude_version.UnsupportedClaude) as e:
            log.error("%s: no turn runs", e)
            turn.exit, turn.error = "failure", str(e)
            return turn
        turn.policy = policy
        args = self.turn_args(policy)
        prompt = turn_prompt(messages, retried)
        code, run = self.attempt(args, prompt, turn)
        if run.succeeded(code) and run.auto_compacted():
            turn.exit = "compact-retry"  # the CLI compacted by itself and went on
        elif not run.succeeded(code) and run.context_full():
            if run.compactions:  # never compact twice what the CLI just compacted
                log.warning(
                    "the context is full and claude's own compaction did not help: "
                    "retrying the turn once in a new session"
                )
                self.forget_session()
            else:
                log.warning("the context is full: compacting and retrying the turn once")
                self.compact_session(policy, turn)
            code, run = self.attempt(args, prompt, turn)
            turn.exit = "compact-retry" if run.succeeded(code) else "failure"
            if not run.succeeded(code) and run.context_full():
                # resuming it again would fail the same way, turn after turn
                log.error("the context is still full: the next turn starts a new session")
                self.forget_session()
        elif not run.succeeded(code):
            turn.exit = "failure"
            log.error("turn failed (exit %d): %s", code, run.failure_reason())
        if turn.exit == "failure":
            turn.error = run.failure_reason()[:500] or f"claude exited {code}"
        turn.exit_code = code
        return turn

    def handle(self, items: list[dict]) -> None:
        """Run the turn of a batch (`{"message", "attempts"}` items) and report it."""
        started = time.monotonic()
        for i in items:
            i["attempts"] = i.get("attempts", 0) + 1
        self.save_inflight(items)
        messages = [i["message"] for i in items]
        retried = {
            i["message"].get("id") for i in items if i["attempts"] > 1 or i.get("interrupted")
        }
        log.info("turn: %s", ", ".join(f"#{m.get('id')} from {m.get('from')}" for m in messages))
        try:
            turn = self.turn(messages, retried)
        except Stop:
            # a redeploy or the daemon stopping is no fault of the batch: not an attempt
            for i in items:
                i["attempts"] -= 1
                i["interrupted"] = True  # the next prompt still says it was handed before
            self.save_inflight(items)
            raise
        # received: each message counted once, in the first turn that reports it; plus
        # what the agent's own recv calls returned
        for i in items:
            if not i.get("counted"):
                turn.received[party_class(i["message"].get("from"))] += 1
                i["counted"] = True
        if turn.exit == "failure":
            for i in items:
                i["error"] = turn.error
            self.save_inflight(items)  # a stop during give_up leaves them, with the error
            keep = [i for i in items if i["attempts"] < MAX_ATTEMPTS]
            self.give_up([i for i in items if i not in keep])
            self.save_inflight(keep)
        else:
            self.save_inflight([])
        report = {
            "duration": round(time.monotonic() - started, 3),
            "exit": turn.exit,
            "exit_code": turn.exit_code,
            "tools": dict(turn.tools),
            "denials": dict(turn.denials),
            "sent": dict(turn.sent),
            "received": dict(turn.received),
            "notes_bytes": notes.size(self.notes_path),
        }
        if turn.subagent_tools:
            report["subagent_tools"] = dict(turn.subagent_tools)
        if turn.cost is not None:
            report["cost_usd"] = round(turn.cost, 6)
        if turn.error:
            report["error"] = turn.error
        log.info(
            "turn %s in %.1f s%s",
            turn.exit,
            report["duration"],
            f"; denied: {dict(turn.denials)}" if turn.denials else "",
        )
        self.report(report)
        if turn.policy is not None:
            self.maybe_compact_notes(turn.policy)

    def maybe_compact_notes(self, policy: dict) -> None:
        limit = policy.get("notesCompactBytes") or notes.DEFAULT_COMPACT_BYTES
        if (size := notes.size(self.notes_path)) <= limit:
            return
        log.info("notes are %d bytes (over %d): compacting", size, limit)
        args = self.bare_args(policy)

        def session(prompt: str) -> str | None:
            code, run = self.run_claude(args, prompt)
            return str(run.result.get("result") or "") if run.succeeded(code) else None

        notes.compact(self.notes_path, session)

    # -- the loop --------------------------------------------------------------------------

    def loop(self) -> None:
        self.connect()
        log.info(
            "%s (%s) ready on %s; waiting for messages",
            self.me.get("name"),
            self.me.get("role"),
            self.c.socket,
        )
        delay, restarted, released = 1.0, True, False
        while True:
            pending = self.load_inflight()
            # a batch left by a stopped harness runs at once; one that failed waits a while
            wait = 0 if restarted else self.c.retry_seconds if pending else self.c.poll_seconds
            restarted = False
            try:
                if not released:
                    self.release()
                    released = True
                new = self.recv(wait)
            except (DaemonUnavailable, HiveError, OSError, ValueError) as e:
                log.warning("recv failed (%s); retrying in %.0f s", e, delay)
                released = False
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 1.0
            if items := self.record(pending, new):
                self.handle(items)

    def run(self) -> int:
        def stop(signum, frame):
            raise Stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.c.exit_with_parent:
            try:
                lifeline.follow(self.c.lifeline, _parent_gone)
            except (ValueError, OSError) as e:
                log.error("%s: not starting", e)
                return 2
        self.c.state.mkdir(parents=True, exist_ok=True)
        try:  # refused at the start: a claude the harness does not support never runs
            self.check_claude(self.policy())
        except PolicyUnreadable as e:
            log.warning("%s (checked again at each turn)", e)
        except claude_version.UnsupportedClaude as e:
            log.error("refusing to start: %s", e)
            return EXIT_UNSUPPORTED_CLAUDE
        try:
            self.loop()
        except Stop as e:
            log.info("stopping (%s)", e)
            if self.proc is not None:
                self._end(self.proc)
        return 0


def _parent_gone() -> None:
    """The local runtime's harness ends with the daemon that started it, even a killed one
    (runtime/lifeline.py)."""
    log.warning("the daemon that started this harness is gone")
    os.kill(os.getpid(), signal.SIGTERM)


def main(config: Config) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return Harness(config).run()
