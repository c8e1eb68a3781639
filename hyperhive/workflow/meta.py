"""The meta repo: one commit per deploy, pinning every agent's deployed revision."""

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from dulwich.object_store import iter_tree_contents, tree_lookup_path
from dulwich.repo import Repo
from dulwich.trailers import Trailer, format_trailers, parse_trailers

from hyperhive.gitstore import gitcli, refs
from hyperhive.gitstore.history import log as commit_log
from hyperhive.gitstore.history import write_commit
from hyperhive.gitstore.refs import MAIN
from hyperhive.gitstore.repos import init_bare, open_repo
from hyperhive.gitstore.tags import TagInfo, parse_raw_tag
from hyperhive.home import Home
from hyperhive.names import ENGINE, format_target
from hyperhive.policy import deployed_policy
from hyperhive.workflow.lock import locked, transition_lock

log = logging.getLogger("hyperhive.meta")

# The newest prune record; each record names the one before (`Previous-Prune:`), so the
# records are found without walking every deploy.
PRUNED_REF = b"refs/hyperhive/pruned"
PINS_FILE = "hyperhive.json"
# In each applied repo, one ref per revision the meta flake pins: the agent's input is
# `git+file://<applied>?ref=refs/hyperhive/pins/<rev>&rev=<rev>`. A Nix before 2.20
# fetches only the ref and then looks for the rev in it ("Cannot find Git revision … in
# ref"), and the revision being built is not on main yet (nor is there a main on a first
# deploy); a ref pointing at the revision itself works with every Nix.
PIN_REF = "refs/hyperhive/pins/"
PIN_PREFIX = PIN_REF.encode()
LOCK_TIMEOUT = 300  # seconds: locking fetches each new revision from its applied repo
LOCK_TEMP_PREFIX = "hyperhive-lock-"
ACTOR = ENGINE


@dataclass(frozen=True)
class NixosInputs:
    """Where a NixOS host's meta flake finds nixpkgs and hyperhive's nix/ files."""

    source: str
    nixpkgs: str
    system: str = "x86_64-linux"


def nixos_inputs() -> NixosInputs | None:
    """Set by the host module (`HYPERHIVE_SOURCE`, `HYPERHIVE_NIXPKGS`); None elsewhere,
    where the meta flake only pins revisions."""
    source, nixpkgs = os.environ.get("HYPERHIVE_SOURCE"), os.environ.get("HYPERHIVE_NIXPKGS")
    if not (source and nixpkgs):
        return None
    return NixosInputs(source, nixpkgs, os.environ.get("HYPERHIVE_SYSTEM") or "x86_64-linux")


def pin_ref(rev: str) -> str:
    """The ref of the applied repo that the meta flake fetches `rev` by."""
    if not re.fullmatch(r"[0-9a-f]{40}", rev):
        raise ValueError(f"not a commit id: {rev!r}")
    return PIN_REF + rev


def applied_url(home: Home, name: str) -> str:
    """The git remote nix fetches agent `name`'s inputs from (its input's `url` without
    `git+` and the query, as the lock's `original` records it and `git fetch` is given it)."""
    return f"file://{home.applied_dir(name)}"


def agent_input_url(home: Home, name: str, rev: str) -> str:
    """The meta flake's input of agent `name` at `rev` (see PIN_REF)."""
    return f"git+{applied_url(home, name)}?ref={pin_ref(rev)}&rev={rev}"


def write_pin_refs(home: Home, pins: dict[str, dict]) -> None:
    """Create the applied repos' pin refs that the flake of `pins` fetches (a pin ref is
    never moved: it names its commit). Refs are kept after the pin changes, so the
    inputs of every earlier meta commit stay fetchable.

    Past PACK_LOOSE_TAGS loose pins they are packed, as tags are (one pin per deploy,
    and every `git fetch` of one, nix's, reads each loose one). That rewrite of
    packed-refs happens under the applied repo's transition lock, which every other
    rewrite of it (tag packing, retention) holds: none of them finds its lock file
    taken. Callers hold meta's lock or the agent's build lock, never that one."""
    for name, pin in sorted(pins.items()):
        rev = pin["rev"]
        ref = pin_ref(rev).encode()
        directory = home.applied_dir(name)
        with open_repo(directory) as repo:
            if refs.read(repo, ref) is not None:
                continue
            repo[rev.encode()]  # KeyError: the revision is not in the applied repo
            refs.create(repo, ref, rev.encode())
            many = refs.PACK_LOOSE_TAGS
            if refs.count_loose(repo, PIN_PREFIX, stop=many) > many:  # no lock taken below it
                with locked(transition_lock(directory)):
                    refs.pack_if_many(repo, PIN_PREFIX)


def render_flake(home: Home, pins: dict[str, dict], nixos: NixosInputs | None = None) -> str:
    """flake.nix pinning each agent's applied repo at its deployed revision; on a NixOS
    host its outputs are nix/meta-flake.nix's `nixosConfigurations.<name>`."""
    inputs = "".join(
        f'    "agent-{name}" = {{\n'
        f'      url = "{agent_input_url(home, name, pin["rev"])}";\n'
        f"      flake = false;\n"
        f"    }};\n"
        for name, pin in sorted(pins.items())
    )
    if nixos is None:
        revisions = "".join(f'      "{n}" = "{p["rev"]}";\n' for n, p in sorted(pins.items()))
        outputs = (
            f"  outputs = inputs: {{\n    hyperhive.revisions = {{\n{revisions}    }};\n  }};\n"
        )
    else:
        inputs = (
            f'    nixpkgs.url = "path:{nixos.nixpkgs}";\n'
            f"    hyperhive = {{\n"
            f'      url = "path:{nixos.source}";\n'
            f"      flake = false;\n"
            f"    }};\n" + inputs
        )
        outputs = (
            '  outputs = inputs: import "${inputs.hyperhive}/nix/meta-flake.nix" {\n'
            "    inherit inputs;\n"
            "    agents = (builtins.fromJSON (builtins.readFile ./hyperhive.json)).agents;\n"
            f'    system = "{nixos.system}";\n'
            "  };\n"
        )
    return (
        "# Written by hyperhive on every deploy: the deployed revision of every agent.\n"
        "# Do not edit; propose a change to the agent's config repo instead.\n"
        "{\n"
        '  description = "hyperhive meta flake";\n'
        f"  inputs = {{\n{inputs}  }};\n"
        f"{outputs}"
        "}\n"
    )


def no_tags_env(urls: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a nix process that fetches the git remotes `urls`, where every
    git nix starts fetches them without following tags (`remote.<url>.tagOpt=--no-tags`,
    appended to any `GIT_CONFIG_COUNT` entries already set).

    Nix fetches a bare repo's `ref` into a cache clone (~/.cache/nix/gitv3) with a plain
    `git fetch -- <url> <ref>:<ref>`, which also fetches every tag pointing into what it
    got: each applied repo's workflow tags, four per approval, one loose ref each in the
    clone. Past a thousand approvals each fetch advertised and checked every tag and
    walked them all for its connectivity check: `nix flake lock` grew from 0.2 to 0.9 s.
    The tags are the engine's records, not inputs: the fetch needs the pin ref alone."""
    env = dict(os.environ if environ is None else environ)
    try:
        count = int(env.get("GIT_CONFIG_COUNT") or 0)
    except ValueError:
        count = 0
    for url in sorted(set(urls)):
        env[f"GIT_CONFIG_KEY_{count}"] = f"remote.{url}.tagOpt"
        env[f"GIT_CONFIG_VALUE_{count}"] = "--no-tags"
        count += 1
    if count:
        env["GIT_CONFIG_COUNT"] = str(count)
    return env


def lock_flake(
    flake: bytes,
    previous_lock: bytes | None,
    urls: Iterable[str],
    work_dir: Path,
) -> bytes | None:
    """flake.lock for `flake`, starting from the previous lock so inputs already locked
    are kept (`nix flake lock` only adds, relocks changed and drops removed inputs). The
    git remotes `urls` are fetched without their tags (`no_tags_env`). The flake is
    written to a temporary directory in `work_dir` (the hive's meta repo), where one
    that a killed deploy left is swept by a later lock."""
    nix = shutil.which("nix")
    if nix is None:
        raise LockError("nix is not on PATH")
    gitcli.sweep(work_dir, min_age=2 * LOCK_TIMEOUT, prefix=LOCK_TEMP_PREFIX)
    with tempfile.TemporaryDirectory(prefix=LOCK_TEMP_PREFIX, dir=work_dir) as tmp:
        (Path(tmp) / "flake.nix").write_bytes(flake)
        if previous_lock:
            (Path(tmp) / "flake.lock").write_bytes(previous_lock)
        proc = subprocess.run(
            [
                nix,
                "--extra-experimental-features",
                "nix-command flakes",
                "flake",
                "lock",
                f"path:{tmp}",
            ],
            capture_output=True,
            text=True,
            timeout=LOCK_TIMEOUT,
            env=no_tags_env(urls),
        )
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise LockError(f"nix flake lock: {last[0]}")
        lock = Path(tmp) / "flake.lock"
        return lock.read_bytes() if lock.exists() else None  # no inputs: nothing to lock


class LockError(Exception):
    pass


def flake_inputs(home: Home, pins: dict[str, dict], nixos: NixosInputs | None) -> dict:
    """Each input of `render_flake`'s flake as `nix flake lock` records it under
    `original` (what the flake asks for, before locking)."""
    inputs: dict[str, dict] = {}
    if nixos is not None:
        inputs["nixpkgs"] = {"path": nixos.nixpkgs, "type": "path"}
        inputs["hyperhive"] = {"path": nixos.source, "type": "path"}
    for name, pin in pins.items():
        rev = pin["rev"]
        url = applied_url(home, name)
        inputs[f"agent-{name}"] = {"ref": pin_ref(rev), "rev": rev, "type": "git", "url": url}
    return inputs


def lock_is_current(lock: bytes | None, inputs: dict[str, dict]) -> bool:
    """Whether `lock` already locks exactly `inputs` (the root's inputs are these, each
    node's `original` is what the flake asks for): then `nix flake lock` would leave it
    byte for byte as it is, and need not run. Anything unexpected says no."""
    if not lock:
        return False
    try:
        data = json.loads(lock)
        nodes = data["nodes"]
        root = nodes[data["root"]].get("inputs", {})
        if set(root) != set(inputs):
            return False
        return all(
            isinstance(key := root[name], str) and nodes[key].get("original") == original
            for name, original in inputs.items()
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def tree_files(home: Home, pins: dict[str, dict], previous_lock: bytes | None) -> dict[str, bytes]:
    """The meta tree: flake.nix, its lock (when nix can make it) and the pins. The pin refs
    its inputs name are created first (`write_pin_refs`). `nix flake lock` runs only when
    the inputs changed: a lock that already locks them is kept as it is."""
    write_pin_refs(home, pins)
    nixos = nixos_inputs()
    flake = render_flake(home, pins, nixos).encode()
    files = {
        "flake.nix": flake,
        PINS_FILE: (json.dumps({"agents": pins}, indent=2, sort_keys=True) + "\n").encode(),
    }
    if previous_lock and lock_is_current(previous_lock, flake_inputs(home, pins, nixos)):
        files["flake.lock"] = previous_lock
        return files
    try:
        urls = [applied_url(home, name) for name in pins]
        if (lock := lock_flake(flake, previous_lock, urls, home.meta_dir)) is not None:
            files["flake.lock"] = lock
    except (LockError, OSError, subprocess.SubprocessError) as e:
        log.error("meta flake.lock not updated: %s", e)
        if previous_lock:
            files["flake.lock"] = previous_lock  # stale; the next deploy with nix fixes it
    return files


def _read(repo: Repo, head: bytes, path: str) -> bytes | None:
    try:
        _, sha = tree_lookup_path(repo.__getitem__, repo[head].tree, path.encode())
    except KeyError:
        return None
    return repo[sha].data


def init(home: Home) -> None:
    with init_bare(home.meta_dir) as repo:
        commit = write_commit(repo, tree_files(home, {}, None), "init hive\n", ACTOR, [])
        refs.cas(repo, MAIN, None, commit)


def _pins(repo: Repo, head: bytes) -> dict[str, dict]:
    _, sha = tree_lookup_path(repo.__getitem__, repo[head].tree, PINS_FILE.encode())
    return json.loads(repo[sha].data)["agents"]


def pins(home: Home) -> dict[str, dict]:
    """Every agent's deployed `{"rev", "approval"}` as the meta repo's main records it."""
    with open_repo(home.meta_dir) as repo:
        return _pins(repo, repo.refs[MAIN])


def record_deploy(home: Home, name: str, approval_id: int, rev: str) -> bytes:
    """Commit the new pin of `name` on meta's main (compare-and-swap) and return the commit.
    A destroyed agent is never pinned again (its pin was dropped by `record_destroy`): main
    is returned unchanged."""
    with open_repo(home.meta_dir) as repo, locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        if home.is_destroyed(name):
            log.warning("%s is destroyed: not pinning %s in meta", name, rev[:12])
            return head
        current = _pins(repo, head)
        now = int(time.time())  # the pin's time is its meta commit's time, to the second
        # The deployed policy travels with the pin, so the deploy log says what each agent
        # was allowed to do, and when it started running that revision.
        current[name] = {
            "rev": rev,
            "approval": approval_id,
            "time": now,
            "policy": deployed_policy(home, name),
        }
        target = format_target(name, approval_id)
        message = (
            f"deploy {target} {rev[:12]}\n\n"
            f"Agent: {name}\nApproval: {approval_id}\nRevision: {rev}\n"
        )
        files = tree_files(home, current, _read(repo, head, "flake.lock"))
        commit = write_commit(repo, files, message, ACTOR, [head], when=now)
        refs.cas(repo, MAIN, head, commit)
    return commit


def record_destroy(home: Home, name: str) -> bytes:
    """Commit "destroy NAME" on meta's main (compare-and-swap), dropping the agent's pin
    (if it had one), and return the commit."""
    with open_repo(home.meta_dir) as repo, locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        current = _pins(repo, head)
        dropped = current.pop(name, None)
        was = f"Revision: {dropped['rev']}\n" if dropped else "Revision: none (never deployed)\n"
        message = f"destroy {name}\n\nAgent: {name}\n{was}"
        commit = write_commit(
            repo, tree_files(home, current, _read(repo, head, "flake.lock")), message, ACTOR, [head]
        )
        refs.cas(repo, MAIN, head, commit)
    return commit


# -- prune records -------------------------------------------------------------------------


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PrunedTag:
    """A workflow tag that retention removed, as its prune record lists it."""

    agent: str
    tag: str  # <state>/<id>
    commit: str  # the config commit it pointed at
    tagged: int  # when the tag was written
    pruned: int = 0  # when it was removed: its record's time (0 until recorded)
    record: str = ""  # that meta commit
    sha: str = ""  # the tag object's id
    raw: bytes = b""  # the tag object whole (who, when, why): empty in records before them

    def line(self) -> str:
        return f"{self.agent} {self.tag} {self.commit} {_iso(self.tagged)}"

    def listed(self) -> dict:
        """As its record lists it (without when and by which record it was pruned)."""
        return {"agent": self.agent, "tag": self.tag, "commit": self.commit, "tagged": self.tagged}

    def to_json(self) -> dict:
        return {**self.listed(), "pruned": self.pruned, "record": self.record}

    def info(self) -> TagInfo | None:
        """The tag as it was, from the copy its record keeps (None without a copy, or if
        the copy does not hash to the tag's id)."""
        if not (self.raw and self.sha):
            return None
        return parse_raw_tag(f"refs/tags/{self.tag}".encode(), self.sha.encode(), self.raw)


def _parse_pruned(value: str, pruned: int, record: str) -> PrunedTag | None:
    try:
        agent, tag, commit, tagged = value.split()
        when = int(datetime.fromisoformat(tagged).timestamp())
    except ValueError:
        return None
    return PrunedTag(agent, tag, commit, when, pruned, record)


# Each removed tag object is kept in its record's message, quoted line by line so that no
# line of it can be read as a trailer or a heading, under "Tag: AGENT STATE/ID SHA".
_TAG_HEAD = re.compile(r"Tag: (\S+) (\S+) ([0-9a-f]{40})")
_QUOTE = "| "


def _quote_tag(t: PrunedTag) -> str:
    text = t.raw.decode("utf-8", errors="replace").removesuffix("\n")
    quoted = "".join((f"{_QUOTE}{line}" if line else "|") + "\n" for line in text.split("\n"))
    return f"Tag: {t.agent} {t.tag} {t.sha}\n{quoted}"


def _quoted_tags(message: str) -> dict[tuple[str, str], tuple[str, bytes]]:
    """(agent, tag) -> (sha, the tag object) from a record's message."""
    found: dict[tuple[str, str], tuple[str, bytes]] = {}
    head, lines = None, []
    for line in message.split("\n") + [""]:
        if head and line.startswith("|"):
            lines.append(line[len(_QUOTE) :] if line.startswith(_QUOTE) else "")
            continue
        if head:
            found[(head[1], head[2])] = (head[3], ("\n".join(lines) + "\n").encode())
            head, lines = None, []
        head = _TAG_HEAD.fullmatch(line)
    return found


def record_prune(home: Home, removed: list[PrunedTag], failed_days: int) -> bytes:
    """Commit one prune record on meta's main (compare-and-swap; the tree is unchanged,
    so the pins and the flake stay as they are) listing every removed tag, and return it.

    Written BEFORE the tags are deleted: a crash in between leaves a record of tags that
    still exist (readers ignore those; the next run records them again), never a deleted
    tag without a record."""
    with open_repo(home.meta_dir) as repo, locked(transition_lock(home.meta_dir)):
        head = repo.refs[MAIN]
        previous = refs.read(repo, PRUNED_REF)
        agents = sorted({t.agent for t in removed})
        of = ", ".join(agents) if len(agents) <= 3 else f"{len(agents)} agents"
        trailers = [Trailer("Failed-Days", str(failed_days))]
        if previous:
            trailers.append(Trailer("Previous-Prune", previous.decode()))
        trailers += [Trailer("Pruned", t.line()) for t in removed]
        message = (
            f"prune {len(removed)} tags of {of}\n\n"
            "Removed by retention: the proposal/approved/building tags of approvals\n"
            f"that ended, failed/denied tags older than {failed_days} days (0: none).\n"
            "Each Pruned line: agent, tag, the commit it pointed at, when it was written.\n"
            "Each tag object follows whole (who, when, why), its lines quoted with '| '.\n\n"
            + "".join(_quote_tag(t) + "\n" for t in removed if t.raw)
        ) + format_trailers(trailers).decode()
        files = {
            e.path.decode(): repo[e.sha].data
            for e in iter_tree_contents(repo.object_store, repo[head].tree)
        }
        commit = write_commit(repo, files, message, ACTOR, [head])
        refs.cas(repo, MAIN, head, commit)
        refs.cas(repo, PRUNED_REF, previous, commit)
    return commit


@dataclass(frozen=True)
class PruneRecord:
    commit: str
    time: int
    failed_days: int | None
    tags: tuple[PrunedTag, ...]


def _record(commit: str, when: int, message: bytes) -> tuple[PruneRecord, str | None]:
    """A prune commit's record and the previous record it names."""
    tags, failed_days, previous = [], None, None
    copies = _quoted_tags(message.decode("utf-8", errors="replace"))
    for t in parse_trailers(message)[1]:
        if t.key == "Pruned":
            if (tag := _parse_pruned(t.value, when, commit)) is not None:
                if copy := copies.get((tag.agent, tag.tag)):
                    tag = replace(tag, sha=copy[0], raw=copy[1])
                tags.append(tag)
            else:
                log.warning("meta %s: unreadable Pruned line %r", commit[:12], t.value)
        elif t.key == "Failed-Days" and t.value.isdigit():
            failed_days = int(t.value)
        elif t.key == "Previous-Prune":
            previous = t.value
    return PruneRecord(commit, when, failed_days, tuple(tags)), previous


@functools.lru_cache(maxsize=8)
def _records(meta_dir: str, head: bytes) -> tuple[PruneRecord, ...]:
    """The chain of records from `head`: parsed once per new record, not per page view."""
    found: list[PruneRecord] = []
    with open_repo(Path(meta_dir)) as repo:
        sha: str | None = head.decode()
        while sha:
            try:
                c = repo[sha.encode()]
            except (KeyError, ValueError):
                log.warning("meta: prune record %s is missing; older records are skipped", sha)
                break
            record, sha = _record(c.id.decode(), c.commit_time, c.message)
            found.append(record)
    return tuple(found)


def prune_records(home: Home) -> tuple[PruneRecord, ...]:
    """Every prune record, newest first."""
    with open_repo(home.meta_dir) as repo:
        head = refs.read(repo, PRUNED_REF)
    return _records(str(home.meta_dir), head) if head else ()


@functools.lru_cache(maxsize=8)
def _by_agent(meta_dir: str, head: bytes) -> dict[str, dict[str, PrunedTag]]:
    found: dict[str, dict[str, PrunedTag]] = {}
    for record in _records(meta_dir, head):  # newest first: the newest record wins
        for t in record.tags:
            found.setdefault(t.agent, {}).setdefault(t.tag, t)
    return found


def pruned_tags(home: Home, name: str) -> dict[str, PrunedTag]:
    """The tags of `name` that prune records list, by `<state>/<id>`. The newest record
    wins: an older one may list a tag whose deletion a crash prevented."""
    with open_repo(home.meta_dir) as repo:
        head = refs.read(repo, PRUNED_REF)
    return dict(_by_agent(str(home.meta_dir), head).get(name, {})) if head else {}


DEPLOY_SEARCH = 2000  # meta commits looked through for a deploy's pin, newest first


@functools.lru_cache(maxsize=256)
def _deploy_commit(meta_dir: str, head: bytes, name: str, approval_id: int) -> str | None:
    with open_repo(Path(meta_dir)) as repo:
        for entry in repo.get_walker(include=[head], max_entries=DEPLOY_SEARCH):
            c = entry.commit
            if not c.message.startswith(b"deploy "):
                continue
            found = {t.key: t.value for t in parse_trailers(c.message)[1]}
            if found.get("Agent") == name and found.get("Approval") == str(approval_id):
                return c.id.decode()
    return None


def deploy_commit(home: Home, name: str, approval_id: int) -> str | None:
    """The meta commit that pinned deploy `name#approval_id` (among the newest
    DEPLOY_SEARCH commits of meta's main; None if it is not there)."""
    with open_repo(home.meta_dir) as repo:
        head = refs.read(repo, MAIN)
    return _deploy_commit(str(home.meta_dir), head, name, approval_id) if head else None


# -- the meta log --------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaEntry:
    """One meta commit as `hyperhive meta log` shows it."""

    commit: str
    time: int
    kind: str  # init, deploy, destroy, prune or other
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)
    pruned: tuple[PrunedTag, ...] = ()

    def to_json(self) -> dict:
        data: dict = {
            "commit": self.commit,
            "time": self.time,
            "kind": self.kind,
            "subject": self.subject,
        }
        if self.kind in ("deploy", "destroy"):
            data["agent"] = self.trailers.get("Agent")
        if self.kind == "deploy":
            approval = self.trailers.get("Approval", "")
            data["approval"] = int(approval) if approval.isdigit() else None
            data["revision"] = self.trailers.get("Revision")
        if self.kind == "prune":
            data["removed"] = [t.listed() for t in self.pruned]
        return data


KINDS = ("init", "deploy", "destroy", "prune")


def log_entries(home: Home) -> Iterator[MetaEntry]:
    """Meta's main, newest first: deploys, destroys and prune records."""
    with open_repo(home.require().meta_dir) as repo:
        for c in commit_log(repo, repo.refs[MAIN]):
            word = c.subject.split(" ", 1)[0]
            kind = word if word in KINDS else "other"
            trailers = {
                t.key: t.value for t in parse_trailers(c.message.encode())[1] if t.key != "Pruned"
            }
            pruned = _record(c.sha, c.time, c.message.encode())[0].tags if kind == "prune" else ()
            yield MetaEntry(c.sha, c.time, kind, c.subject, trailers, pruned)
