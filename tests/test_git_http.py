"""The git remote: the stock `git` client against a real `hyperhive up` (clone, push to
refs/for/main and main, refusals, tokens, limits, malformed packs), agents' tokens, and
the access rules through Flask's test client."""

import base64
import gzip
import http.client
import os
import urllib.error
import urllib.request

import pytest
from support.daemon import Daemon
from support.gitcli import ZERO, commit, objects_of, ok_git, pack_between, refs_of, run_git
from support.hive import git, run_cli
from support.remote import agent, clone, hive, url  # noqa: F401
from support.wait import wait_for

from forge_ui import create_app
from forge_ui.auth import git_identity
from hyperhive import operator, tokens
from hyperhive.agents import create_agent
from hyperhive.errors import BadInput, HiveError, UnknownAgent
from hyperhive.hive import Hive
from hyperhive.runtime.local import LocalRuntime
from hyperhive.spawn import destroy, spawn_draft
from hyperhive.workflow.approvals import Approvals

# -- the stock git client against the daemon ---------------------------------------------


def test_the_manager_token_is_in_its_state_with_mode_0600(hive):
    path = tokens.state_file(hive.home, "manager")
    assert path.stat().st_mode & 0o777 == 0o600
    assert tokens.identify(hive.home, hive.manager) == "manager"


def test_push_to_refs_for_main_makes_a_proposal(hive, tmp_path):
    name = agent(hive, "proposer")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = commit(work, {"notes.md": "hello\n"}, "add notes")
    config = hive.home.config_dir(name)
    before = refs_of(config)

    out = ok_git(work, "push", "origin", "HEAD:refs/for/main")

    review = f"http://127.0.0.1:{hive.port}/review/{name}/2"
    assert f"remote: proposal {name}#2: {review}" in out
    applied = hive.home.applied_dir(name)
    assert git(applied, "rev-parse", "proposal/2^{commit}").strip() == sha
    tag = git(applied, "cat-file", "-p", "proposal/2")
    assert "Actor: manager" in tag and "Reason:" not in tag  # no -o reason: none recorded
    assert refs_of(config) == before  # refs/for/main is not stored, main did not move
    assert git(applied, "cat-file", "-t", f"{sha}:notes.md").strip() == "blob"
    assert list((config / ".git" / "objects").glob("tmp_objdir-*")) == []


def test_a_push_option_reason_is_the_proposals_reason(hive, tmp_path):
    name = agent(hive, "reasoned")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = commit(work, {"notes.md": "why\n"}, "explain")

    out = ok_git(
        work,
        "push",
        "-o",
        "reason=pin  the model: cheaper",
        "-o",
        "follows=1",
        "origin",
        "HEAD:refs/for/main",
    )

    assert f"remote: proposal {name}#2: " in out
    applied = hive.home.applied_dir(name)
    trailers = git(applied, "for-each-ref", "--format=%(contents:trailers)", "refs/tags/proposal/2")
    assert "Actor: manager" in trailers and "Reason: pin the model: cheaper" in trailers
    assert f"Follows: {name}#1" in trailers  # -o follows=ID: the approval it answers
    assert Approvals(hive.home, name).get(2).follows == 1
    assert git(applied, "rev-parse", "proposal/2^{commit}").strip() == sha
    assert Approvals(hive.home, name).get(2).states["proposal"].trailers["Reason"] == (
        "pin the model: cheaper"
    )


def test_a_push_with_nothing_new_or_an_unsaid_rollback_is_refused(hive, tmp_path):
    """Gerrit's "no new changes", and a rollback over git that must say so (-o rollback):
    each a `remote:` line, nothing written; said, the proposal names the deploy."""
    from hyperhive.workflow.deploy import deploy

    name = agent(hive, "samey")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    first = ok_git(work, "rev-parse", "HEAD").strip()
    # the daemon checks #1 on its own: its check tag is no write of the refused pushes
    applied = hive.home.applied_dir(name)
    wait_for(lambda: "refs/tags/checked/1" in refs_of(applied), what="#1's check")
    before = refs_of(applied)
    proc = run_git(work, "push", "origin", "HEAD:refs/for/main")  # #1 is that tree, pending
    assert proc.returncode != 0
    assert f"remote: refs/for/main: no new changes: {first[:12]} has the tree of {name}#1" in (
        proc.stderr
    )
    assert refs_of(hive.home.applied_dir(name)) == before

    approvals = Approvals(hive.home, name)
    approvals.approve(1, "operator")
    deploy(hive.home, name, 1, LocalRuntime(hive.home))
    commit(work, {"notes.md": "later\n"}, "later")
    ok_git(work, "push", "origin", "HEAD:refs/for/main")  # #2
    approvals.approve(2, "operator")
    deploy(hive.home, name, 2, LocalRuntime(hive.home))
    ok_git(work, "reset", "-q", "--hard", first)
    proc = run_git(work, "push", "origin", "HEAD:refs/for/main")
    assert proc.returncode != 0 and "say so with --rollback (a push: -o rollback)" in proc.stderr
    # A rollback that answers #2 (what went wrong with it) says both.
    out = ok_git(work, "push", "-o", "rollback", "-o", "follows=2", "origin", "HEAD:refs/for/main")
    assert f"remote: proposal {name}#3: " in out
    tag = git(hive.home.applied_dir(name), "cat-file", "-p", "proposal/3")
    assert f"Rollback: {name}#1" in tag and f"Follows: {name}#2" in tag
    assert "Actor: manager" in tag
    assert approvals.get(3).follows == 2


@pytest.mark.parametrize(
    "options, ref, said, status",
    [
        (
            ["reason=" + "x" * 5000],
            "refs/for/main",
            f"push option 'reason={'x' * 33}'… is 5007 bytes, the limit is 4096",
            "push option too long",
        ),
        (
            ["topic=speed"],
            "refs/for/main",
            "push option 'topic=speed': the options this remote knows are reason=TEXT",
            "unknown push option",
        ),
        (["reason"], "refs/for/main", "push option 'reason': the options", "unknown push option"),
        (
            ["rollback"],
            "main",
            "push option rollback is a proposal's: push to refs/for/main",
            "rollback without proposal",
        ),
        (["reason= "], "refs/for/main", "push option reason= needs a text", "empty reason"),
        (
            ["reason=a", "reason=b"],
            "refs/for/main",
            "push option reason= is given twice",
            "reason given twice",
        ),
        (
            ["reason=a"],
            "main",
            "push option reason= is a proposal's: push to refs/for/main",
            "reason without proposal",
        ),
        (
            [f"o{i}" for i in range(33)],
            "refs/for/main",
            "more than 32 push options",
            "too many push options",
        ),
        (["follows=x"], "refs/for/main", "push option follows=: follows must be", "bad follows"),
        (["follows=1"], "main", "push option follows= is a proposal's", "follows without proposal"),
    ],
    ids=[
        "too-long",
        "unknown",
        "no-value",
        "rollback-not-a-proposal",
        "empty",
        "twice",
        "not-a-proposal",
        "too-many",
        "bad-follows",
        "follows-not-a-proposal",
    ],
)
def test_bad_push_options_refuse_the_push_and_write_nothing(
    hive, tmp_path, request, options, ref, said, status
):
    name = agent(hive, f"opt-{request.node.callspec.id}")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = commit(work, {"a.md": "a\n"}, "a")
    config = hive.home.config_dir(name)
    before, files = refs_of(config), objects_of(config)

    proc = run_git(work, "push", *(f"-o{o}" for o in options), "origin", f"HEAD:{ref}")

    assert proc.returncode != 0
    assert f"remote: push refused: {said}" in proc.stderr
    assert f"({status})" in proc.stderr
    assert refs_of(config) == before and objects_of(config) == files
    assert run_git(config, "cat-file", "-e", sha).returncode != 0
    assert Approvals(hive.home, name).states().keys() == {1}


def test_push_to_main_fast_forwards_and_the_checkout_follows(hive, tmp_path):
    name = agent(hive, "forward")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.operator)
    sha = commit(work, {"agent.nix": "{ }\n", "new.md": "x\n"}, "edit")

    out = ok_git(work, "push", "origin", "HEAD:main")

    config = hive.home.config_dir(name)
    assert "HEAD -> main" in out
    assert git(config, "rev-parse", "main").strip() == sha
    assert git(config, "status", "--porcelain") == ""
    assert (config / "new.md").read_text() == "x\n"
    assert (config / "agent.nix").read_text() == "{ }\n"
    # a proposal of HEAD from the CLI now proposes the pushed commit
    assert run_cli(hive.root, "propose", name, check=True).stdout.strip() == f"{name}#2"


def test_force_push_deletion_and_other_refs_are_refused(hive, tmp_path):
    name = agent(hive, "forced")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    commit(work, {"a.md": "a\n"}, "a")
    ok_git(work, "push", "-q", "origin", "HEAD:main")
    config = hive.home.config_dir(name)
    before, files = refs_of(config), objects_of(config)
    ok_git(work, "reset", "-q", "--hard", "HEAD~1")
    diverged = commit(work, {"b.md": "b\n"}, "b")

    plain = run_git(work, "push", "origin", "HEAD:main")  # git itself sees the non-ff
    assert plain.returncode != 0 and "non-fast-forward" in plain.stderr
    forced = run_git(work, "push", "--force", "origin", "HEAD:main")
    assert forced.returncode != 0
    assert "remote: refs/heads/main: force-push refused" in forced.stderr
    assert "[remote rejected] HEAD -> main (non-fast-forward)" in forced.stderr
    deleted = run_git(work, "push", "origin", ":main")
    assert deleted.returncode != 0
    assert "remote: refs/heads/main: deleting it is refused" in deleted.stderr
    other = run_git(work, "push", "origin", "HEAD:refs/heads/topic", "HEAD:refs/tags/v1")
    assert other.returncode != 0 and "remote: refs/heads/topic: refused" in other.stderr

    assert refs_of(config) == before
    assert objects_of(config) == files
    assert run_git(config, "cat-file", "-e", diverged).returncode != 0  # nothing written


def test_a_refused_ref_refuses_the_whole_push(hive, tmp_path):
    name = agent(hive, "atomic")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    commit(work, {"c.md": "c\n"}, "c")
    proc = run_git(work, "push", "origin", "HEAD:refs/for/main", "HEAD:refs/heads/topic")
    assert proc.returncode != 0
    assert "refs/for/main (atomic push failure)" in proc.stderr
    assert Approvals(hive.home, name).states().keys() == {1}


def test_push_to_applied_or_meta_is_refused(hive, tmp_path):
    name = agent(hive, "readonly")
    work = clone(hive, tmp_path, f"{name}/applied.git", hive.operator)
    applied = hive.home.applied_dir(name)
    before = refs_of(applied)
    commit(work, {"x.md": "x\n"}, "x")
    proc = run_git(work, "push", "origin", "HEAD:main", "HEAD:refs/tags/proposal/9")
    assert proc.returncode != 0
    assert f"remote: {name}/applied.git is read-only" in proc.stderr
    assert "403" in proc.stderr
    meta = run_git(work, "push", url(hive, "meta.git", hive.manager), "HEAD:main")
    assert meta.returncode != 0 and "remote: meta.git is read-only" in meta.stderr
    # (the daemon's check of the new agent's proposal may record `checked/1` meanwhile)
    checked = "refs/tags/checked/"
    assert {k: v for k, v in refs_of(applied).items() if not k.startswith(checked)} == {
        k: v for k, v in before.items() if not k.startswith(checked)
    }


def test_missing_wrong_and_revoked_tokens_get_401(hive, tmp_path):
    name = agent(hive, "tokened")
    repo = f"{name}/config.git"
    missing = run_git(tmp_path, "ls-remote", url(hive, repo))
    assert missing.returncode != 0 and "could not read Username" in missing.stderr
    wrong = run_git(tmp_path, "ls-remote", url(hive, repo, "hht_not-a-token"))
    assert wrong.returncode != 0 and "Authentication failed" in wrong.stderr

    issued = run_cli(hive.root, "token", "issue", name, check=True)
    token = issued.stdout.strip()
    token_id = issued.stderr.split("#")[1].split()[0]
    bearer = ("-c", f"http.extraHeader=Authorization: Bearer {token}")
    assert "refs/heads/main" in ok_git(tmp_path, *bearer, "ls-remote", url(hive, repo))
    listed = run_cli(hive.root, "token", "list", check=True).stdout
    assert f"#{token_id}" in listed and "active" in listed

    run_cli(hive.root, "token", "revoke", token_id, check=True)
    revoked = run_git(tmp_path, "ls-remote", url(hive, repo, token))
    assert revoked.returncode != 0 and "Authentication failed" in revoked.stderr
    assert "remote: this token is unknown or revoked" in revoked.stderr
    again = run_cli(hive.root, "token", "revoke", token_id)
    assert again.returncode == 1 and "already revoked" in again.stderr


def test_an_agent_token_reads_its_own_repos_and_cannot_push(hive, tmp_path):
    name = agent(hive, "reader")
    token = run_cli(hive.root, "token", "issue", name, check=True).stdout.strip()
    work = clone(hive, tmp_path, f"{name}/config.git", token)
    ok_git(tmp_path, "ls-remote", url(hive, f"{name}/applied.git", token))
    for other in ("manager/config.git", "manager/applied.git", "meta.git"):
        proc = run_git(tmp_path, "ls-remote", url(hive, other, token))
        assert proc.returncode != 0 and f"remote: {name}'s token cannot read" in proc.stderr
    commit(work, {"mine.md": "x\n"}, "mine")
    proc = run_git(work, "push", "origin", "HEAD:refs/for/main")
    assert proc.returncode != 0
    assert f"remote: {name}'s token cannot push" in proc.stderr
    assert Approvals(hive.home, name).states().keys() == {1}


def receive_pack(hive, repo: str, token: str, body: bytes) -> bytes:
    req = urllib.request.Request(
        f"http://127.0.0.1:{hive.port}/git/{repo}/git-receive-pack",
        data=body,
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "Authorization": f"Bearer {token}",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no pack"])
def test_a_malformed_pack_is_refused_and_nothing_is_written(hive, tmp_path, damage):
    name = agent(hive, f"broken-{damage.replace(' ', '-')}")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    old = ok_git(work, "rev-parse", "HEAD").strip()
    new = commit(work, {"big.md": os.urandom(4096).hex()}, "payload")
    pack = pack_between(work, old, new)
    body = {"truncated": pack[: len(pack) // 2], "garbage": b"PACK" + b"\0" * 40, "no pack": b""}
    config = hive.home.config_dir(name)
    before, files = refs_of(config), objects_of(config)
    commands = pkt(f"{old} {new} refs/heads/main\0report-status side-band-64k\n".encode())
    commands += pkt(f"{ZERO} {new} refs/for/main\n".encode()) + b"0000"

    reply = receive_pack(hive, f"{name}/config.git", hive.manager, commands + body[damage])

    assert b"unpack unreadable pack" in reply
    assert b"ng refs/heads/main unreadable pack" in reply
    assert b"ng refs/for/main unreadable pack" in reply
    assert b"push refused: unreadable pack" in reply
    assert refs_of(config) == before
    assert objects_of(config) == files
    assert Approvals(hive.home, name).states().keys() == {1}


@pytest.mark.parametrize(
    "options, said",
    [
        (pkt(b"reason=\xff\xfe") + b"0000", b"is not UTF-8 text without control characters"),
        (pkt(b"reason=a\0b") + b"0000", b"is not UTF-8 text without control characters"),
        # the body ends inside the options
        (pkt(b"reason=cut")[:-2], b"ng refs/for/main unreadable push options"),
    ],
    ids=["not-utf8", "nul", "truncated"],
)
def test_malformed_push_options_are_refused(hive, tmp_path, request, options, said):
    name = agent(hive, f"rawopt-{request.node.callspec.id}")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    new = commit(work, {"a.md": "a\n"}, "a")
    pack = pack_between(work, f"{new}~1", new)
    config = hive.home.config_dir(name)
    before, files = refs_of(config), objects_of(config)
    commands = pkt(
        f"{ZERO} {new} refs/for/main\0report-status side-band-64k push-options\n".encode()
    )
    body = commands + b"0000" + options + (pack if options.endswith(b"0000") else b"")

    reply = receive_pack(hive, f"{name}/config.git", hive.manager, body)

    assert said in reply and b"ng refs/for/main " in reply
    assert refs_of(config) == before and objects_of(config) == files
    assert Approvals(hive.home, name).states().keys() == {1}


def test_a_push_over_the_size_limit_is_refused(hive, tmp_path):
    name = agent(hive, "toobig")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    commit(work, {"blob.bin": os.urandom(120_000)}, "big")
    config = hive.home.config_dir(name)
    files = objects_of(config)
    settings = hive.root / "hyperhive.toml"
    settings.write_text("[git]\nmax_push_bytes = 100000\n")  # read at each push
    try:
        proc = run_git(work, "push", "origin", "HEAD:refs/for/main")
        chunked = run_git(work, "-c", "http.postBuffer=4096", "push", "origin", "HEAD:main")
    finally:
        settings.unlink()
    for p in (proc, chunked):
        assert p.returncode != 0
        assert "remote: push refused: the pack is larger than 100000 bytes" in p.stderr
        assert "(push too large)" in p.stderr
    assert objects_of(config) == files
    assert Approvals(hive.home, name).states().keys() == {1}


def test_a_gzipped_body_is_held_to_the_size_limit_once_unzipped(hive, tmp_path):
    """git gzips large fetch requests; the limit applies to what the body unzips to, or
    a few KiB of gzip would make the daemon read (and dulwich keep) gigabytes."""
    name = agent(hive, "zipped")
    token = run_cli(hive.root, "token", "issue", name, check=True).stdout.strip()
    head = git(hive.home.config_dir(name), "rev-parse", "HEAD").strip()
    caps = "multi_ack side-band-64k thin-pack ofs-delta"
    wants = pkt(f"want {head} {caps}\n".encode()) + pkt(f"want {head}\n".encode()) * 60_000
    body = gzip.compress(wants + b"0000" + pkt(b"done\n"))  # 3 MB unzipped, 9 KB sent
    assert len(body) < 20_000 and len(wants) > 2 * 1024 * 1024 + 1000
    req = urllib.request.Request(
        f"http://127.0.0.1:{hive.port}/git/{name}/config.git/git-upload-pack",
        data=body,
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {token}",
        },
    )
    settings = hive.root / "hyperhive.toml"
    settings.write_text("[git]\nmax_push_bytes = 1000\n")  # a request: 1 MiB + 1000 bytes
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            reply = r.read()
    except (urllib.error.HTTPError, http.client.HTTPException, ConnectionError) as e:
        reply = repr(e).encode()
    finally:
        settings.unlink()
    assert b"PACK" not in reply  # the wants past the limit were never read
    ok_git(tmp_path, "ls-remote", url(hive, f"{name}/config.git", token))  # still serving


def test_a_chunked_push_is_received(hive, tmp_path):
    """git sends a body over http.postBuffer chunked; gunicorn has undone the chunking."""
    name = agent(hive, "chunked")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = commit(work, {"blob.bin": os.urandom(50_000)}, "chunky")
    ok_git(work, "-c", "http.postBuffer=4096", "push", "origin", "HEAD:main")
    assert git(hive.home.config_dir(name), "rev-parse", "main").strip() == sha


def test_a_thin_pack_resolves_against_the_repo(hive, tmp_path):
    """A second push sends deltas against objects the server has (a thin pack)."""
    name = agent(hive, "thin")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    lines = [f"line {i}: {os.urandom(16).hex()}\n" for i in range(2000)]
    commit(work, {"big.txt": "".join(lines)}, "big")
    ok_git(work, "push", "-q", "origin", "HEAD:main")
    lines[1000] = "changed\n"
    sha = commit(work, {"big.txt": "".join(lines)}, "one line")
    out = ok_git(work, "push", "--thin", "origin", "HEAD:refs/for/main")
    assert f"remote: proposal {name}#2" in out
    applied = hive.home.applied_dir(name)
    assert git(applied, "show", f"{sha}:big.txt").splitlines()[1000] == "changed"
    assert git(applied, "fsck", "--no-dangling").strip() == ""


def test_the_repo_pre_receive_hook_sees_the_push_and_can_refuse_it(hive, tmp_path):
    name = agent(hive, "hooked")
    config = hive.home.config_dir(name)
    hook = config / ".git" / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(
        "#!/bin/sh\n"
        'echo "options: $GIT_PUSH_OPTION_COUNT ${GIT_PUSH_OPTION_0-}"\n'
        "while read old new ref; do\n"
        '  echo "$HYPERHIVE_ACTOR pushes $ref: $(git cat-file -t "$new")"\n'
        '  git ls-tree -r --name-only "$new" | grep -qx secret.txt && exit 3\n'
        "done\n"
        "exit 0\n"
    )
    hook.chmod(0o755)
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    bad = commit(work, {"secret.txt": "pw\n"}, "oops")
    files = objects_of(config)
    refused = run_git(work, "push", "origin", "HEAD:refs/for/main")
    assert refused.returncode != 0
    assert "remote: manager pushes refs/for/main: commit" in refused.stderr
    assert "remote: options: 0 " in refused.stderr
    assert "remote: push refused: pre-receive exited 3" in refused.stderr
    assert "(pre-receive hook declined)" in refused.stderr
    assert objects_of(config) == files
    assert run_git(config, "cat-file", "-e", bad).returncode != 0

    ok_git(work, "rm", "-q", "secret.txt")
    commit(work, {"notes.md": "no secret here\n"}, "fixed")  # something new: not #1's tree
    out = ok_git(work, "push", "-o", "reason=no secret", "origin", "HEAD:refs/for/main")
    assert "remote: options: 1 reason=no secret" in out  # git's hook contract
    assert f"remote: proposal {name}#2" in out


def test_a_checkout_with_uncommitted_changes_refuses_a_push_to_main(hive, tmp_path):
    name = agent(hive, "dirty")
    config = hive.home.config_dir(name)
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    commit(work, {"agent.nix": "{ }\n"}, "edit")
    (config / "agent.nix").write_text("# local edit\n")
    before = refs_of(config)
    proc = run_git(work, "push", "origin", "HEAD:main")
    assert proc.returncode != 0
    assert "has uncommitted changes (agent.nix)" in proc.stderr
    assert refs_of(config) == before
    assert (config / "agent.nix").read_text() == "# local edit\n"
    # a proposal does not touch the checkout: it still goes through
    assert f"proposal {name}#2" in ok_git(work, "push", "origin", "HEAD:refs/for/main")


# -- tokens ------------------------------------------------------------------------------


def test_tokens_are_kept_as_digests_and_revoked_for_good(home):
    create_agent(home, "worker", LocalRuntime(home), "operator")
    token_id, token = tokens.issue(home, "worker", "operator")
    assert token.startswith(tokens.PREFIX)
    assert tokens.identify(home, token) == "worker"
    assert token not in (home.root / "hive.db").read_bytes().decode(errors="replace")
    assert tokens.identify(home, token + "x") is None
    assert tokens.identify(home, operator.token(home)) == "operator"
    assert tokens.identify(home, "") is None
    [row] = tokens.listing(home)
    assert (row["id"], row["agent"], row["created_by"], row["revoked_at"]) == (
        token_id,
        "worker",
        "operator",
        None,
    )
    tokens.revoke(home, token_id, "alice")
    assert tokens.identify(home, token) is None
    assert tokens.listing(home)[0]["revoked_by"] == "alice"
    with pytest.raises(tokens.UnknownToken, match="already revoked by alice"):
        tokens.revoke(home, token_id, "alice")
    with pytest.raises(tokens.UnknownToken, match="no token #99"):
        tokens.revoke(home, 99, "alice")
    huge = run_cli(home.root, "token", "revoke", str(2**64))  # beyond sqlite's integers
    assert huge.returncode == 1
    assert huge.stderr == f"hyperhive: no token #{2**64}: `hyperhive token list` shows them\n"


def test_tokens_only_for_live_agents(home):
    create_agent(home, "gone", LocalRuntime(home), "operator")
    _, token = tokens.issue(home, "gone", "operator")
    destroy(home, "gone", LocalRuntime(home), purge=False)
    assert tokens.identify(home, token) is None  # a destroyed agent's token is dead
    with pytest.raises(BadInput, match="destroyed"):
        tokens.issue(home, "gone", "operator")
    with pytest.raises(UnknownAgent):
        tokens.issue(home, "nobody", "operator")
    with pytest.raises(BadInput, match="operator token"):
        tokens.issue(home, "operator", "operator")


def test_destroying_an_agent_revokes_its_tokens_so_a_new_agent_of_that_name_gets_none(home):
    runtime = LocalRuntime(home)
    create_agent(home, "again", runtime, "operator")
    _, kept = tokens.issue(home, "again", "operator")
    destroy(home, "again", runtime, purge=False, actor="alice")
    destroy(home, "again", runtime, purge=True, actor="alice")
    create_agent(home, "again", runtime, "operator")  # the name is free: a new agent
    assert tokens.identify(home, kept) is None  # the old agent's token reads nothing of it
    [row] = tokens.listing(home)
    assert row["revoked_by"] == "alice"
    _, purged = tokens.issue(home, "again", "operator")
    destroy(home, "again", runtime, purge=True)  # straight to purge: revoked too
    create_agent(home, "again", runtime, "operator")
    assert tokens.identify(home, purged) is None


def test_provision_keeps_a_good_token_and_replaces_a_bad_one(home):
    first = tokens.provision(home, "manager")
    path = tokens.state_file(home, "manager")
    token = path.read_text().strip()
    assert first is not None and tokens.identify(home, token) == "manager"
    assert path.stat().st_mode & 0o777 == 0o600
    assert tokens.provision(home, "manager") is None  # still good: kept
    tokens.revoke(home, first, "operator")
    second = tokens.provision(home, "manager")
    assert second != first and path.read_text().strip() != token
    # a symlink planted in the state directory is replaced, not followed
    target = home.root / "outside"
    target.write_text("keep\n")
    path.unlink()
    path.symlink_to(target)
    assert tokens.provision(home, "manager") is not None
    assert target.read_text() == "keep\n" and not path.is_symlink()


def test_a_token_path_the_manager_blocked_does_not_stop_the_daemon(home):
    """The state directory is the manager's: a directory where its token goes makes
    provisioning fail clearly (the token nobody got is revoked), and `up` starts anyway."""
    path = tokens.state_file(home, "manager")
    path.mkdir()
    (path / "x").write_text("x")
    with pytest.raises(HiveError, match="cannot write the manager's git token"):
        tokens.provision(home, "manager")
    assert [t["revoked_by"] for t in tokens.listing(home)] == ["hyperhive"]
    d = Daemon(home.root).start()
    try:
        assert d.get("/api/state")["agents"][0]["name"] == "manager"
        assert "cannot write the manager's git token" in d.log.read_text()
        assert d.stop() == 0
    finally:
        d.kill()


def basic(secret: str, user: str = "anyone") -> dict:
    pair = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {pair}"}


def test_git_identity_takes_basic_or_bearer(home):
    token = operator.token(home)
    op = tokens.Caller("operator", "operator")
    assert git_identity(home, basic(token)) == op
    assert git_identity(home, {"HTTP_AUTHORIZATION": f"Bearer {token}"}) == op
    only_user = base64.b64encode(token.encode()).decode()
    assert git_identity(home, {"HTTP_AUTHORIZATION": f"Basic {only_user}"}) == op
    assert git_identity(home, basic("wrong")) is None
    assert git_identity(home, basic("pässwört")) is None  # not ASCII: no match, not an error
    assert git_identity(home, {"HTTP_AUTHORIZATION": "Bearer pässwört"}) is None
    assert git_identity(home, {"HTTP_AUTHORIZATION": f"Digest {token}"}) is None
    assert git_identity(home, {}) is None


# -- access rules through the test client ----------------------------------------------


@pytest.fixture
def client(home, runtime):
    return create_app(Hive(home, runtime)).test_client()


def advertise(client, repo: str, service: str, headers: dict):
    return client.get(f"/git/{repo}/info/refs?service={service}", headers=headers)


def test_access_rules(home, runtime, client):
    create_agent(home, "worker", runtime, "operator")
    spawn_draft(home, "sketch", "manager")
    op = {"Authorization": f"Bearer {operator.token(home)}"}
    mgr = {"Authorization": f"Bearer {tokens.issue(home, 'manager', 'operator')[1]}"}
    wkr = {"Authorization": f"Bearer {tokens.issue(home, 'worker', 'operator')[1]}"}
    cases = [
        # repo, service, who, status
        ("manager/config.git", "git-upload-pack", {}, 401),
        ("manager/config.git", "git-upload-pack", op, 200),
        ("manager/config.git", "git-receive-pack", op, 200),
        ("manager/config.git", "git-receive-pack", mgr, 200),
        ("worker/config.git", "git-receive-pack", mgr, 200),
        ("sketch/config.git", "git-receive-pack", mgr, 200),  # a draft: main can be pushed
        ("meta.git", "git-upload-pack", mgr, 200),
        ("meta.git", "git-receive-pack", op, 403),
        ("worker/applied.git", "git-upload-pack", mgr, 200),
        ("worker/applied.git", "git-receive-pack", op, 403),
        ("worker/config.git", "git-upload-pack", wkr, 200),
        ("worker/applied.git", "git-upload-pack", wkr, 200),
        ("worker/config.git", "git-receive-pack", wkr, 403),
        ("manager/config.git", "git-upload-pack", wkr, 403),
        ("meta.git", "git-upload-pack", wkr, 403),
        ("nobody/config.git", "git-upload-pack", op, 404),
        ("sketch/applied.git", "git-upload-pack", op, 404),
        ("Bad..Name/config.git", "git-upload-pack", op, 404),
    ]
    for repo, service, who, status in cases:
        r = advertise(client, repo, service, who)
        assert r.status_code == status, (repo, service, who, r.get_data(as_text=True))
        if status == 200:
            assert r.content_type == f"application/x-{service}-advertisement"
            assert r.headers.get("Cache-Control", "").startswith("no-cache")
    assert client.get("/git/manager/config.git/HEAD", headers=op).get_data() == (
        b"ref: refs/heads/main\n"
    )
    refused = client.post(
        "/git/worker/config.git/git-receive-pack",
        data=b"0000",
        headers={**wkr, "Content-Type": "application/x-git-receive-pack-request"},
    )
    assert refused.status_code == 403
    assert client.get("/git/", headers=op).status_code == 404
    assert "WWW-Authenticate" in advertise(client, "meta.git", "git-upload-pack", {}).headers


def test_a_push_to_a_draft_or_destroyed_agent_makes_no_proposal(home, runtime, tmp_path):
    """refs/for/main needs an applied repo; a destroyed agent takes no push at all."""
    from dulwich.object_store import DiskObjectStore

    from hyperhive.gitstore.receive import Command, Refused
    from hyperhive.workflow.push import FOR_MAIN, MAIN, ConfigPush

    spawn_draft(home, "sketch", "manager")
    create_agent(home, "gone", runtime, "operator")
    destroy(home, "gone", runtime, purge=False)
    for name, ref, message in [
        ("sketch", FOR_MAIN, "is a draft"),
        ("gone", MAIN, "was destroyed"),
        ("gone", FOR_MAIN, "was destroyed"),
    ]:
        config = home.config_dir(name)
        head = git(config, "rev-parse", "HEAD").strip().encode()
        rules = ConfigPush(home, name, "manager", lambda a: "")
        store = DiskObjectStore(str(config / ".git" / "objects"))
        with pytest.raises(Refused, match=message):
            rules.check(Command(head, head, ref), store)
        store.close()


def test_a_truncated_body_through_the_test_client_leaves_no_quarantine(home, client, tmp_path):
    work = tmp_path / "w"
    ok_git(tmp_path, "clone", "-q", str(home.config_dir("manager")), str(work))
    old = ok_git(work, "rev-parse", "HEAD").strip()
    new = commit(work, {"x.md": "x\n"}, "x")
    pack = pack_between(work, old, new)
    body = pkt(f"{ZERO} {new} refs/for/main\0report-status\n".encode()) + b"0000" + pack[:-30]
    config = home.config_dir("manager")
    files = objects_of(config)
    r = client.post(
        "/git/manager/config.git/git-receive-pack",
        data=body,
        headers={
            "Authorization": f"Bearer {operator.token(home)}",
            "Content-Type": "application/x-git-receive-pack-request",
        },
    )
    assert r.status_code == 200
    assert b"ng refs/for/main unreadable pack" in r.get_data()
    assert objects_of(config) == files
    assert Approvals(home, "manager").states().keys() == {1}


def test_a_refusal_is_plain_text_that_git_shows(home, client):
    r = client.get("/git/manager/config.git/info/refs?service=git-upload-pack")
    assert r.status_code == 401
    assert r.content_type.startswith("text/plain")
    assert "hyperhive operator token" in r.get_data(as_text=True)


def test_a_broken_settings_file_is_a_clear_500(home, client):
    (home.root / "hyperhive.toml").write_text("[git]\nmax_push_bytes = 0\n")
    r = client.get(
        "/git/manager/config.git/info/refs?service=git-upload-pack",
        headers={"Authorization": f"Bearer {operator.token(home)}"},
    )
    assert r.status_code == 500
    assert "git.max_push_bytes must be at least 1" in r.get_data(as_text=True)


def test_a_push_cut_off_by_a_crash_leaves_a_quarantine_the_next_start_removes(home):
    from hyperhive.daemon.up import recover_all

    objects = home.config_dir("manager") / ".git" / "objects"
    left = objects / "tmp_objdir-incoming-abc123"
    (left / "pack").mkdir(parents=True)
    (left / "pack" / "tmp_pack_x").write_bytes(b"PACK half")
    files = objects_of(home.config_dir("manager"))
    recover_all(home)
    assert not left.exists()
    assert objects_of(home.config_dir("manager")) == [f for f in files if "incoming" not in f]
    assert git(home.config_dir("manager"), "fsck", "--no-progress") == ""


def test_an_empty_token_list_says_so(home):
    out = run_cli(home.root, "token", "list", check=True).stdout
    assert out.startswith("no agent tokens")
    assert run_cli(home.root, "token", "list", "--json", check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("body", [b"zzzz", b"0032abc", b"00"], ids=["hex", "short", "cut"])
@pytest.mark.parametrize("service", ["git-receive-pack", "git-upload-pack"])
def test_a_malformed_pkt_line_is_a_400_that_says_so(home, client, service, body):
    r = client.post(
        f"/git/manager/config.git/{service}",
        data=body,
        headers={
            "Authorization": f"Bearer {operator.token(home)}",
            "Content-Type": f"application/x-{service}-request",
        },
    )
    assert r.status_code == 400
    assert r.get_data(as_text=True).startswith("not git's smart HTTP protocol: ")
