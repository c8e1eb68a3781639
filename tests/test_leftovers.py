"""What a killed daemon or a full disk leaves behind, swept at the next start; a full disk
answered with a clear message (507), on a real full filesystem (a small tmpfs in a
private mount namespace)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.gitcli import GIT_ENV, commit, ok_git
from support.hive import git
from support.wait import wait_for

from hyperhive import operator
from hyperhive.agents import create_agent
from hyperhive.daemon.up import recover_all
from hyperhive.gitstore.receive import MIGRATED_PREFIX, Quarantine
from hyperhive.gitstore.repos import sweep_locks
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.lock import locked
from hyperhive.workflow.push import push_lock


def test_a_push_killed_between_its_packs_and_its_refs_leaves_no_pack(tmp_path):
    d = Daemon(tmp_path / "hive").start()
    home = Home(d.root)
    try:
        create_agent(home, "cut", LocalRuntime(home), "operator")
        config = home.config_dir("cut")
        objects = config / ".git" / "objects"
        url = f"http://x:{operator.token(home)}@127.0.0.1:{d.port}/git/cut/config.git"
        ok_git(tmp_path, "clone", "-q", url, str(tmp_path / "w"))
        commit(tmp_path / "w", {"cut.md": "cut\n"}, "cut")
        main = git(config, "rev-parse", "main").strip()
        with locked(push_lock(home, "cut")):  # the push stops before its refs move
            push = subprocess.Popen(
                ["git", "push", "origin", "HEAD:main"],
                cwd=tmp_path / "w",
                env=GIT_ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            record = wait_for(lambda: next(objects.glob(f"{MIGRATED_PREFIX}*"), None), what="move")
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait()
        push.communicate(timeout=30)
    finally:
        d.kill()
    packs = json.loads(record.read_text())["packs"]
    assert packs and all((objects / "pack" / p).exists() for p in packs)

    recover_all(home)

    assert not any((objects / "pack" / p).exists() for p in packs)
    assert not record.exists()
    assert git(config, "rev-parse", "main").strip() == main
    assert git(config, "fsck", "--no-progress", "--no-dangling") == ""
    assert git(config, "status", "--porcelain") == ""


def test_a_pack_whose_refs_did_move_is_kept(home):
    """Killed after the refs moved, before the record went: the pack is main's now."""
    config = home.config_dir("manager")
    git(config, "repack", "-q", "-a", "-d")
    objects = config / ".git" / "objects"
    packs = sorted(p.name for p in (objects / "pack").iterdir())
    main = git(config, "rev-parse", "main").strip()
    record = objects / f"{MIGRATED_PREFIX}x.json"
    record.write_text(json.dumps({"packs": packs, "refs": {"refs/heads/main": main}}))
    assert Quarantine.sweep(objects) == []
    assert sorted(p.name for p in (objects / "pack").iterdir()) == packs
    assert not record.exists()
    assert git(config, "fsck", "--no-progress") == ""


def test_stale_git_locks_are_swept_and_hyperhive_flocks_kept(home):
    applied = home.applied_dir("manager")
    stale = [applied / "objects" / "ab" / "cdef.lock", applied / "refs" / "tags" / "x.lock"]
    fresh = applied / "objects" / "ab" / "fresh.lock"
    ours = applied / "hyperhive-transition.lock"
    for path in [*stale, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    ours.touch()
    old = time.time() - 3600
    for path in [*stale, ours]:
        os.utime(path, (old, old))
    assert sorted(sweep_locks(applied)) == sorted(stale)
    assert fresh.exists() and ours.exists()


# -- a real full disk ---------------------------------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from forge_ui import create_app
    from hyperhive import operator
    from hyperhive.agents import init_hive
    from hyperhive.daemon.up import recover_all
    from hyperhive.hive import Hive
    from hyperhive.home import Home
    from hyperhive.runtime.local import LocalRuntime

    home = Home(Path(sys.argv[1]) / "hive")
    runtime = LocalRuntime(home)
    init_hive(home, runtime, "operator")
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()  # no deploy
    client = create_app(Hive(home, runtime)).test_client()
    auth = {"Authorization": f"Bearer {operator.token(home)}"}
    filler = Path(sys.argv[1]) / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to its last block
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\\0" * size)
            except OSError:
                pass
    out = {}
    r = client.post("/api/approvals/manager/1/approve", headers=auth, json={"force": True})
    out["full"] = [r.status_code, r.get_json()]
    applied = home.applied_dir("manager")
    locks = [str(p) for p in applied.glob("objects/**/*.lock")]
    out["locks"] = locks
    filler.unlink()
    old = time.time() - 3600
    for lock in locks:
        os.utime(lock, (old, old))  # as the next start finds it, a while later
    recover_all(home)
    out["locks_after"] = [str(p) for p in applied.glob("objects/**/*.lock")]
    r = client.post("/api/approvals/manager/1/approve", headers=auth, json={"force": True})
    out["freed"] = [r.status_code, r.get_json()["state"] if r.status_code == 200 else r.text]
    print(json.dumps(out))
    """
)


def test_a_full_disk_is_a_clear_507_and_its_leftover_lock_is_swept(tmp_path):
    unshare = shutil.which("unshare")
    mount = tmp_path / "small"
    mount.mkdir()
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    inner = f"mount -t tmpfs -o size=4m tmpfs {mount} && exec {sys.executable} {script} {mount}"
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private tmpfs")
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    status, body = out["full"]
    assert status == 507, out
    assert "the hive's disk is full (No space left on device" in body["error"]
    assert "free space and try again" in body["error"]
    assert out["locks"], "dulwich left its lock behind (what this test is about)"
    assert out["locks_after"] == []
    assert out["freed"] == [200, "approved"]
