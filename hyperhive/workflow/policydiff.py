"""The effective-policy diff of an approval: what the change does to the agent's powers.

Both sides are evaluated the same way, the way the local runtime's deploy evaluates a
config (runtime/policy.py `evaluate`: the `hyperhive.*` options of `agent.nix` with
nix-instantiate, restricted evaluation, checked by `normalize`), from the commit's tree
checked out into `<home>/cache/policy/.checkout-*`: "before" is the commit the change is
reviewed against (`review_base`: the deployed one while undecided, the proposal's `Base`
after), "after" the proposed commit. Packages are `environment.systemPackages` of the config's
modules, evaluated with stub derivations named for the identifiers the `.nix` files use
(the real nixpkgs is not evaluated: a name is what the reviewer needs); a module that does
more with `pkgs` than name packages leaves the packages row "could not evaluate".

A commit's evaluation never changes, so it is cached by commit (and by the evaluator:
`EVALUATOR`, a digest of the expression and the known options) in
`<home>/cache/policy/<sha>.json`, failures too, except a timeout or a missing
nix-instantiate (the host's problem, not the commit's). Each evaluation is bounded by
`timeout` seconds; a failed one makes the diff `{"error": "could not evaluate …"}`.

The rule per field (`RULES`, each row's tooltip; docs/operator-guide.md): a row *widens*
when the agent may afterwards do something it could not before, *narrows* when it may do
less and nothing more, *changes* when its powers are the same (model, notes threshold) or
only moved (a pattern already covered).
"""

import hashlib
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from hyperhive import policy as schema
from hyperhive.errors import UnsafeTree
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.history import checkout
from hyperhive.home import Home
from hyperhive.runtime import policy
from hyperhive.runtime.base import BuildError
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.states import State

log = logging.getLogger("hyperhive.policydiff")

WIDENS, NARROWS, CHANGES = "widens", "narrows", "changes"
TIMEOUT = 30.0  # seconds for one commit's evaluation (each of policy and packages)
NOTE_WORK = 100  # removed Bash patterns a widening one is compared with for its note
CACHE_MAX = 2000  # cached commits kept; the least recently written go first
MAX_STUB_NAMES = 20000  # identifiers stubbed as packages; a config with more: not evaluated
IDENT_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_'-]*(?:\.[A-Za-z_][A-Za-z0-9_'-]*){0,3}")
STUB_KEYS = {"type", "name", "outPath"}
EVALUATOR = hashlib.sha256(
    (policy.EVAL_EXPR + repr(schema.KNOWN_OPTIONS) + "policydiff-1").encode()
).hexdigest()[:16]

# The defaults of the options, so a key absent from either side compares as its value.
DEFAULTS: dict = {
    "allowedRecipients": None,
    "allowedBash": None,
    "extraMcpServers": {},
    "model": None,
    "claude": None,
    "allowSubagents": False,
    "notesCompactBytes": None,
}

RULES = {
    "allowedRecipients": "null is everyone: null → list narrows, list → null widens; "
    "a recipient added widens, one removed narrows",
    "allowedBash": "null is the blanket Bash: null → list narrows, list → null widens; a "
    "pattern added widens unless the old patterns already cover it (then it changes), "
    "one removed narrows unless the new patterns still cover it; `*` in a pattern "
    "matches anything, `X:*` is X or X followed by arguments",
    "extraMcpServers": "a server added widens, removed narrows; of a kept server a new "
    "command, changed args or an env key added or changed widen (they can make the "
    "server do anything), an env key removed changes; allowed tools: [*] is every "
    "tool, a tool added widens, removed narrows",
    "model": "changes: the model decides how the agent reasons, not what it may do",
    "claude": "widens: the binary is what enforces the Bash and tool permissions, "
    "another one may not",
    "allowSubagents": "false → true widens, true → false narrows",
    "notesCompactBytes": "changes: when notes are compacted, not what the agent may do",
    "packages": "a package added widens (a new program for Bash), removed narrows",
}


# -- the rules ----------------------------------------------------------------------------


def rule_of(field: str) -> str:
    """The rule a row of `field` (`extraMcpServers.search.env`, …) was marked by."""
    return RULES.get(field.split(".")[0], "")


def row(field: str, effect: str, change: str, note: str = "") -> dict:
    return {"field": field, "effect": effect, "change": change, "note": note}


def bash_globs(pattern: str) -> list[str]:
    """What a `Bash(<pattern>)` pattern allows, as globs where `*` matches anything:
    `X:*` (the prefix form) is X alone or X followed by arguments."""
    if pattern.endswith(":*"):
        prefix = pattern[:-2]
        return [prefix, prefix + " *"]
    return [pattern]


def _glob_re(glob: str) -> str:
    return ".*".join(re.escape(part) for part in glob.split("*"))


def compiled(patterns: list[str]) -> re.Pattern | None:
    """One regular expression matching what any of `patterns` allows (None: nothing)."""
    globs = [_glob_re(g) for p in patterns for g in bash_globs(p)]
    return re.compile("|".join(f"(?:{g})" for g in globs), re.DOTALL) if globs else None


def covered(pattern: str, by: re.Pattern | None) -> bool:
    """Whether every command `pattern` allows is allowed by the `compiled` patterns `by`:
    each glob of it, read as a literal string, matches one of theirs (a `*` in it is then
    matched by a `*` of theirs only, so no cover is claimed that is not)."""
    return by is not None and all(by.fullmatch(g) for g in bash_globs(pattern))


def _added_removed(before: list, after: list) -> tuple[list, list]:
    old, new = set(before), set(after)
    return [x for x in after if x not in old], [x for x in before if x not in new]


def _list(field: str, before: list | None, after: list | None, everything: str) -> list[dict]:
    """A null-is-unrestricted list (allowedRecipients): rows per entry."""
    if before == after:
        return []
    if before is None:
        shown = ", ".join(after) if after else "none"
        return [row(field, NARROWS, f"{everything} → only {shown}")]
    if after is None:
        return [row(field, WIDENS, f"only {', '.join(before) or 'none'} → {everything}")]
    added, removed = _added_removed(before, after)
    return [row(field, WIDENS, f"+ {x}") for x in added] + [
        row(field, NARROWS, f"- {x}") for x in removed
    ]


def diff_recipients(before: list | None, after: list | None) -> list[dict]:
    return _list("allowedRecipients", before, after, "anyone")


def diff_bash(before: list | None, after: list | None) -> list[dict]:
    field = "allowedBash"
    if before == after:
        return []
    if before is None or after is None:
        return _list(field, before, after, "any command")
    added, removed = _added_removed(before, after)
    old_re, new_re = compiled(before), compiled(after)
    rows = []
    for p in added:
        if covered(p, old_re):
            rows.append(row(field, CHANGES, f"+ {p}", note="already allowed"))
        else:
            # which removed patterns it replaces: a note, skipped for huge lists
            mine = compiled([p]) if len(removed) <= NOTE_WORK else None
            replaces = [q for q in removed if covered(q, mine)]
            note = f"broader than {', '.join(replaces)}" if replaces else ""
            rows.append(row(field, WIDENS, f"+ {p}", note=note))
    for p in removed:
        if covered(p, new_re):
            rows.append(row(field, CHANGES, f"- {p}", note="still allowed"))
        else:
            rows.append(row(field, NARROWS, f"- {p}"))
    return rows


def _server_line(server: dict) -> str:
    parts = [" ".join([server["command"], *server.get("args", [])])]
    if server.get("env"):
        parts.append("env " + ", ".join(sorted(server["env"])))
    parts.append("tools " + ", ".join(server.get("allowedTools", ["*"])))
    return "; ".join(parts)


def _tools(key: str, before: list[str], after: list[str]) -> list[dict]:
    field = f"extraMcpServers.{key}.allowedTools"
    if before == after:
        return []
    if "*" in after and "*" not in before:
        return [row(field, WIDENS, f"{', '.join(before) or 'none'} → every tool")]
    if "*" in before and "*" not in after:
        return [row(field, NARROWS, f"every tool → only {', '.join(after) or 'none'}")]
    added, removed = _added_removed(before, after)
    return [row(field, WIDENS, f"+ {t}") for t in added] + [
        row(field, NARROWS, f"- {t}") for t in removed
    ]


def diff_servers(before: dict, after: dict) -> list[dict]:
    field = "extraMcpServers"
    rows = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            rows.append(row(field, WIDENS, f"+ {key}: {_server_line(new)}"))
            continue
        if new is None:
            rows.append(row(field, NARROWS, f"- {key}: {_server_line(old)}"))
            continue
        where = f"{field}.{key}"
        if old["command"] != new["command"]:
            rows.append(row(where, WIDENS, f"command {old['command']} → {new['command']}"))
        if old.get("args", []) != new.get("args", []):
            change = f"args {' '.join(old.get('args', []))} → {' '.join(new.get('args', []))}"
            rows.append(row(where, WIDENS, change))
        old_env, new_env = old.get("env", {}), new.get("env", {})
        rows += [row(f"{where}.env", WIDENS, f"+ {k}") for k in sorted(set(new_env) - set(old_env))]
        rows += [
            row(f"{where}.env", WIDENS, f"{k} changed")
            for k in sorted(set(new_env) & set(old_env))
            if new_env[k] != old_env[k]
        ]
        rows += [
            row(f"{where}.env", CHANGES, f"- {k}") for k in sorted(set(old_env) - set(new_env))
        ]
        rows += _tools(key, old.get("allowedTools", ["*"]), new.get("allowedTools", ["*"]))
    return rows


def _shown(value: object, default: str) -> str:
    return default if value is None else str(value)


def diff_policies(before: dict, after: dict) -> list[dict]:
    """The rows of what changes from policy `before` to `after` (normalized policies)."""
    b = {**DEFAULTS, **before}
    a = {**DEFAULTS, **after}
    rows = diff_recipients(b["allowedRecipients"], a["allowedRecipients"])
    rows += diff_bash(b["allowedBash"], a["allowedBash"])
    rows += diff_servers(b["extraMcpServers"] or {}, a["extraMcpServers"] or {})
    if b["model"] != a["model"]:
        change = f"{_shown(b['model'], 'default')} → {_shown(a['model'], 'default')}"
        rows.append(row("model", CHANGES, change))
    if b["claude"] != a["claude"]:
        change = (
            f"{_shown(b['claude'], 'claude on PATH')} → {_shown(a['claude'], 'claude on PATH')}"
        )
        rows.append(row("claude", WIDENS, change))
    if bool(b["allowSubagents"]) != bool(a["allowSubagents"]):
        on = bool(a["allowSubagents"])
        rows.append(
            row("allowSubagents", WIDENS if on else NARROWS, "off → on" if on else "on → off")
        )
    if b["notesCompactBytes"] != a["notesCompactBytes"]:
        old, new = b["notesCompactBytes"], a["notesCompactBytes"]
        change = f"{_shown(old, 'default')} → {_shown(new, 'default')}"
        rows.append(row("notesCompactBytes", CHANGES, change))
    return rows


def diff_packages(before: list[str], after: list[str]) -> list[dict]:
    added, removed = _added_removed(before, after)
    return [row("packages", WIDENS, f"+ {p}") for p in added] + [
        row("packages", NARROWS, f"- {p}") for p in removed
    ]


# -- evaluation ---------------------------------------------------------------------------


class Uncached(Exception):
    """An answer about this host or this moment, not about the commit: not cached."""


def cache_dir(home: Home) -> Path:
    return home.root / "cache" / "policy"


def _stub_pkgs(root: Path) -> dict:
    """A stand-in for nixpkgs: every identifier (and dotted path) the config's `.nix`
    files use is a derivation-like set whose outPath is its name."""
    names: set[bytes] = set()
    for path in sorted(root.rglob("*.nix")):
        if path.is_file() and not path.is_symlink():
            names.update(IDENT_RE.findall(path.read_bytes()))
        if len(names) > MAX_STUB_NAMES:
            raise BuildError(f"the config uses over {MAX_STUB_NAMES} names: packages not evaluated")
    stub: dict = {}
    # `pkgs.python3Packages.foo` reads `python3Packages.foo` of pkgs: every suffix of a path
    paths = {tuple(p[i:]) for p in (n.decode().split(".") for n in names) for i in range(len(p))}
    for parts in sorted(paths):
        node, path = stub, []
        for part in parts:
            if part in STUB_KEYS:
                break
            path.append(part)
            dotted = ".".join(path)
            node = node.setdefault(part, {"type": "derivation", "name": dotted, "outPath": dotted})
    return stub


def _scratch(home: Home) -> tempfile.TemporaryDirectory:
    """A directory to check a commit out into, in the hive's home (what the hive's
    processes write stays in it)."""
    cache_dir(home).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".checkout-", dir=cache_dir(home))


def _package_names(raw: object) -> list[str]:
    if not isinstance(raw, list):
        raise BuildError("environment.systemPackages is not a list")
    return sorted({p if isinstance(p, str) else json.dumps(p) for p in raw})


def _evaluate_commit(home: Home, name: str, commit: str, timeout: float) -> dict:
    """`evaluate_root` of `commit` checked out; a commit the repo lacks is Uncached."""
    with _scratch(home) as tmp:
        root = Path(tmp) / "config"
        root.mkdir()
        try:
            with Approvals(home, name).repo() as repo:
                files = checkout(repo, commit.encode(), root)
        except UnsafeTree as e:
            return {"error": f"cannot check out {commit[:12]}: {e}"}
        except KeyError:
            raise Uncached(f"{commit[:12]} is not in {name}'s applied repo") from None
        if "agent.nix" not in files:
            return {"error": "agent.nix is missing"}
        return evaluate_root(root, timeout)


def evaluate_root(root: Path, timeout: float = TIMEOUT) -> dict:
    """{"policy": …, "packages": [...] or {"error": …}} or {"error": …} for the config at
    `root` (a directory of its own: a stub file is written in it for the evaluation): one
    nix-instantiate for both; when that fails, the options alone as deploy evaluates them
    (the packages may be what failed). EvalTimeout when it takes over `timeout`."""
    nix = shutil.which("nix-instantiate")
    if nix is None:
        raise Uncached("nix-instantiate is not on PATH")
    noop: Callable[[str], None] = lambda line: None  # noqa: E731
    # in the checkout: restricted evaluation reads nothing outside it (-I)
    stub = root / f".hyperhive-pkgs-{os.getpid()}-{threading.get_ident()}.json"
    try:
        stub.write_text(json.dumps(_stub_pkgs(root)))
        args = ("--argstr", "part", "both", "--argstr", "pkgsFile", str(stub))
        what = "the packages (environment.systemPackages)"
        raw = policy._evaluate(nix, root / "agent.nix", noop, timeout, args, what)
        return {
            "policy": policy.normalize(raw["policy"]),
            "packages": _package_names(raw["packages"]),
        }
    except policy.EvalTimeout:
        raise
    except (BuildError, TypeError, KeyError) as e:
        packages_error = str(e)
    finally:
        stub.unlink(missing_ok=True)
    try:
        found = policy.evaluate(root, noop, timeout)
    except BuildError as e:
        if isinstance(e, policy.EvalTimeout):
            raise
        return {"error": str(e)}
    return {"policy": found, "packages": {"error": packages_error}}


def evaluated(home: Home, name: str, commit: str, timeout: float = TIMEOUT) -> dict:
    """The evaluated policy of `commit` (of agent `name`'s applied repo), from the cache
    when it was evaluated before: {"policy", "packages"} or {"error"}."""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        return {"error": f"not a commit id: {commit!r}"}
    if (found := cached(home, commit)) is not None:
        return found
    if shutil.which("nix-instantiate") is None:
        # policy.evaluate's textual rule still applies; the answer depends on this host
        return _textual(home, name, commit)
    try:
        result = _evaluate_commit(home, name, commit, timeout)
    except (policy.EvalTimeout, Uncached) as e:
        return {"error": str(e)}
    _store(cache_dir(home) / f"{commit}.json", {"evaluator": EVALUATOR, "result": result})
    return result


def _textual(home: Home, name: str, commit: str) -> dict:
    with _scratch(home) as tmp:
        try:
            with Approvals(home, name).repo() as repo:
                checkout(repo, commit.encode(), Path(tmp))
            found = policy.evaluate(Path(tmp), lambda line: None)
        except (UnsafeTree, KeyError, BuildError) as e:
            return {"error": str(e)}
    return {"policy": found, "packages": {"error": "nix-instantiate is not on PATH"}}


def _store(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(entry, sort_keys=True))
    os.replace(tmp, path)
    entries = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in entries[: max(0, len(entries) - CACHE_MAX)]:
        old.unlink(missing_ok=True)


def cached(home: Home, commit: str) -> dict | None:
    """The cached evaluation of `commit`, or None (never evaluates)."""
    try:
        entry = json.loads((cache_dir(home) / f"{commit}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("evaluator") != EVALUATOR:
        return None
    result = entry.get("result")
    return result if isinstance(result, dict) else None


# -- an approval's diff -------------------------------------------------------------------


def review_base(approvals: Approvals, approval: Approval) -> str | None:
    """What the change is reviewed against: the deployed commit it would replace while it
    is undecided, the one deployed when it was proposed once it is decided."""
    if approval.state in (State.PROPOSAL, State.APPROVED):
        return approvals.deployed_commit()
    proposal = approval.states.get(State.PROPOSAL)
    if proposal:
        return proposal.trailers.get("Base")
    # Retention pruned the proposal with its Base: the deploy before this one ended.
    ended = (approval.states[approval.state].time, approval.id)
    before = [
        (tag.time, i, tag.target)
        for i, tag in approvals.tags_in(State.DEPLOYED).items()
        if (tag.time, i) < ended
    ]
    return max(before)[2] if before else None


Evaluate = Callable[[str], dict | None]


def build(before_commit: str | None, after_commit: str, evaluate: Evaluate) -> dict | None:
    """The diff from the evaluation of `before_commit` (None: nothing deployed, the
    default policy) to `after_commit`'s; None when `evaluate` has no answer yet."""
    after = evaluate(after_commit)
    before = (
        {"policy": dict(schema.DEFAULT_POLICY), "packages": []}
        if before_commit is None
        else evaluate(before_commit)
    )
    if after is None or before is None:
        return None
    result: dict = {"before": before_commit, "after": after_commit}
    for side, found in (("before", before), ("after", after)):
        if "error" in found:
            return {**result, "error": f"could not evaluate the {side} side: {found['error']}"}
    rows = diff_policies(before["policy"], after["policy"])
    old, new = before["packages"], after["packages"]
    packages_error = next((p["error"] for p in (new, old) if isinstance(p, dict)), None)
    if packages_error is None:
        rows += diff_packages(old, new)
    return {
        **result,
        "widens": any(r["effect"] == WIDENS for r in rows),
        "narrows": any(r["effect"] == NARROWS for r in rows),
        "rows": rows,
        "packages_error": packages_error and f"could not evaluate: {packages_error}",
        "error": None,
    }


def of_approval(
    home: Home,
    approval: Approval,
    *,
    timeout: float = TIMEOUT,
    only_cached: bool = False,
    approvals: Approvals | None = None,
) -> dict | None:
    """The policy diff of an approval (JSON-ready). `only_cached`: None unless both
    sides are in the cache (the dashboard: it never waits for nix). `approvals`: the
    agent's, when the caller has them."""
    if approval.pruned_on:
        return None
    approvals = approvals or Approvals(home, approval.agent)
    base = review_base(approvals, approval)
    if only_cached:
        # Both sides' evaluations are in the cache for good once there (a commit's
        # evaluation never changes), so their diff is too: the dashboard asks for every
        # pending approval's at each load.
        key = (str(home.root), base, approval.commit)
        if (known := _cached_diffs.get(key)) is None:
            known = build(base, approval.commit, lambda commit: cached(home, commit))
            if known is not None:
                _cached_diffs.put(key, known)
        return known
    return build(
        base, approval.commit, lambda commit: evaluated(home, approval.agent, commit, timeout)
    )


# The diffs `of_approval(only_cached=True)` built, by home, base and commit (shared:
# never change one).
_cached_diffs: LRU[tuple[str, str | None, str], dict] = LRU(4096)


def approval_json(home: Home, approval: Approval, timeout: float = TIMEOUT) -> dict:
    """The approval's JSON with its `policy_diff` (the CLI's and the API's shape)."""
    return {**approval.to_json(), "policy_diff": of_approval(home, approval, timeout=timeout)}


class Warmer:
    """Evaluates approvals' commits in the background, one at a time, so a page that
    must not wait for nix (the dashboard) shows the diff once it is cached: `wanted`
    queues an approval once, and calls `done` after its evaluation."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        self.queue: queue.Queue[tuple[Home, Approval, Callable[[], None]]] = queue.Queue()
        self.pending: set[tuple[str, str, int]] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def wanted(self, home: Home, approval: Approval, done: Callable[[], None]) -> None:
        key = (str(home.root), approval.agent, approval.id)
        with self.lock:
            if key in self.pending:
                return
            self.pending.add(key)
            if self.thread is None:
                # a daemon thread: an evaluation in flight never holds up an exit
                self.thread = threading.Thread(target=self._run, name="policydiff", daemon=True)
                self.thread.start()
        self.queue.put((home, approval, done))

    def _run(self) -> None:
        while True:
            home, approval, done = self.queue.get()
            try:
                of_approval(home, approval, timeout=self.timeout)
            except Exception:
                log.exception("evaluating the policy diff of %s failed", approval.target)
            finally:
                with self.lock:
                    self.pending.discard((str(home.root), approval.agent, approval.id))
            try:
                done()
            except Exception:
                log.exception("after the policy diff of %s", approval.target)
