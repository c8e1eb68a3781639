"""Policy extraction at deploy on the local runtime, with the real nix-instantiate: what
`hyperhive.*` evaluates to, when the build fails, and what the broker then enforces."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from support.hive import commit_config, git, run_cli

from hyperhive import spawn
from hyperhive.broker.messages import Broker, PolicyRefused
from hyperhive.errors import PolicyError
from hyperhive.home import Home
from hyperhive.policy import deployed_policy
from hyperhive.runtime import policy
from hyperhive.runtime.base import BuildError
from hyperhive.runtime.local_harness import Harnesses
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

NAME = "worker"


def extract(tmp_path: Path, agent_nix: str, **more: str) -> dict:
    root = tmp_path / "cfg"
    root.mkdir(exist_ok=True)
    (root / "agent.nix").write_text(agent_nix)
    for rel, text in more.items():
        (root / rel).write_text(text)
    return policy.extract(root, lambda line: None)


# -- evaluation -------------------------------------------------------------------------


def test_a_list_of_recipients(tmp_path):
    found = extract(tmp_path, '{ ... }:\n{ hyperhive.allowedRecipients = [ "a" "operator" ]; }\n')
    assert found == {"allowedRecipients": ["a", "operator"]}


def test_null_recipients_is_unrestricted(tmp_path):
    found = extract(tmp_path, "{ ... }: { hyperhive.allowedRecipients = null; }\n")
    assert found == {"allowedRecipients": None}


@pytest.mark.parametrize(
    "text",
    [
        "{ ... }:\n{\n}\n",
        "{ }\n",
        "{ config, pkgs, ... }: { environment.systemPackages = [ pkgs.git ]; }\n",
    ],
)
def test_no_hyperhive_attribute_is_the_default(tmp_path, text):
    assert extract(tmp_path, text) == {"allowedRecipients": None}


def test_config_pkgs_signature_with_pkgs_in_unrelated_options(tmp_path):
    text = """{ config, pkgs, lib, modulesPath, ... }:
{
  environment.systemPackages = [ pkgs.git pkgs.ripgrep ];
  imports = [ (modulesPath + "/profiles/minimal.nix") ];
  services.foo.enable = lib.mkForce true;
  hyperhive = {
    allowedRecipients = [ "manager" ];
    model = "claude-opus-4";
    allowedBash = [ "git *" "ls" ];
    extraMcpServers.search = { command = "/bin/search"; args = [ "--fast" ]; };
  };
}
"""
    # `imports` uses modulesPath: evaluating the imports needs it, so the stub refuses.
    with pytest.raises(BuildError, match="module argument `modulesPath` is not available"):
        extract(tmp_path, text)
    found = extract(
        tmp_path, text.replace('  imports = [ (modulesPath + "/profiles/minimal.nix") ];\n', "")
    )
    assert found == {
        "allowedRecipients": ["manager"],
        "model": "claude-opus-4",
        "allowedBash": ["git *", "ls"],
        "extraMcpServers": {
            "search": {
                "command": "/bin/search",
                "args": ["--fast"],
                "env": {},
                "allowedTools": ["*"],
            }
        },
    }


def test_claude_and_the_notes_threshold(tmp_path):
    claude = tmp_path / "opt" / "claude"
    claude.parent.mkdir()
    claude.write_text("#!/bin/sh\n")
    claude.chmod(0o755)
    found = extract(
        tmp_path,
        f'{{ ... }}: {{ hyperhive.claude = "{claude}"; hyperhive.notesCompactBytes = 4096; }}\n',
    )
    assert found == {"allowedRecipients": None, "claude": str(claude), "notesCompactBytes": 4096}
    nulls = extract(
        tmp_path, "{ ... }: { hyperhive = { claude = null; notesCompactBytes = null; }; }"
    )
    assert nulls == {"allowedRecipients": None, "claude": None, "notesCompactBytes": None}
    assert extract(tmp_path, "{ ... }: { hyperhive.allowSubagents = true; }") == {
        "allowedRecipients": None,
        "allowSubagents": True,
    }


def test_imports_are_followed_and_merged(tmp_path):
    a = '{ lib, ... }: { config.hyperhive.allowedRecipients = lib.mkDefault [ "x" ]; }\n'
    b = '{ config, ... }: { hyperhive.model = "m"; hyperhive.allowedBash = [ "cat" ]; }\n'
    found = extract(
        tmp_path,
        '{ ... }: { imports = [ ./a.nix ./b.nix ./a.nix ]; hyperhive.allowedBash = [ "ls" ]; }\n',
        **{"a.nix": a, "b.nix": b},
    )
    assert found == {"allowedRecipients": ["x"], "allowedBash": ["ls", "cat"], "model": "m"}


def test_conflicting_definitions_fail(tmp_path):
    with pytest.raises(BuildError, match="hyperhive.model has conflicting definitions"):
        extract(
            tmp_path,
            '{ imports = [ ./a.nix ]; hyperhive.model = "m"; }\n',
            **{"a.nix": '{ hyperhive.model = "n"; }\n'},
        )


@pytest.mark.parametrize(
    "text, message",
    [
        ("{ ... }: { hyperhive.model = 1 }\n", "syntax error"),
        (
            "{ pkgs, ... }: { hyperhive.model = pkgs.foo; }\n",
            "attribute 'foo' missing (at agent.nix:1:",
        ),
        (
            '{ ... }: { hyperhive.allowedRecipient = [ "a" ]; }\n',
            "unknown option hyperhive.allowedRecipient",
        ),
        ('{ ... }: { hyperhive.allowedRecipients = "a"; }\n', "must be null or a list of strings"),
        ('{ ... }: { hyperhive.allowedRecipients = [ "../x" ]; }\n', "invalid agent name"),
        (
            "{ ... }: { hyperhive.model = builtins.readFile /etc/passwd; }\n",
            "forbidden in restricted mode",
        ),
        ('{ ... }: { hyperhive.model = throw "nope"; }\n', "nope"),
        ("{ ... }: { hyperhive.extraMcpServers.x = { args = [ ]; }; }\n", "needs a `command`"),
        (
            '{ ... }: { hyperhive.claude = "bin/claude"; }\n',
            'hyperhive.claude must be null or an absolute path, not "bin/claude"',
        ),
        (
            "{ ... }: { hyperhive.claude = 1; }\n",
            "hyperhive.claude must be null or an absolute path, not 1",
        ),
        (
            '{ ... }: { hyperhive.claude = "/nonexistent/bin/claude"; }\n',
            "hyperhive.claude: /nonexistent/bin/claude is not an executable file on this host",
        ),
        (
            '{ ... }: { hyperhive.claude = "/etc/passwd"; }\n',
            "hyperhive.claude: /etc/passwd is not an executable file on this host",
        ),
        (
            "{ ... }: { hyperhive.notesCompactBytes = 0; }\n",
            "hyperhive.notesCompactBytes must be a positive integer (bytes), not 0",
        ),
        (
            "{ ... }: { hyperhive.notesCompactBytes = -1; }\n",
            "hyperhive.notesCompactBytes must be a positive integer (bytes), not -1",
        ),
        (
            '{ ... }: { hyperhive.notesCompactBytes = "32k"; }\n',
            'hyperhive.notesCompactBytes must be a positive integer (bytes), not "32k"',
        ),
        (
            "{ ... }: { hyperhive.notesCompactBytes = 1.5; }\n",
            "hyperhive.notesCompactBytes must be a positive integer (bytes), not 1.5",
        ),
        (
            '{ ... }: { hyperhive.allowSubagents = "yes"; }\n',
            'hyperhive.allowSubagents must be true or false, not "yes"',
        ),
    ],
)
def test_evaluation_errors_fail(tmp_path, text, message):
    with pytest.raises(BuildError) as e:
        extract(tmp_path, text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_textual_check_without_nix(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None)
    template = (
        '# Configuration of the hyperhive agent "x".\n# `hyperhive propose x`\n{ ... }:\n{\n}\n'
    )
    assert extract(tmp_path, template) == {"allowedRecipients": None}
    for text in (
        "{ ... }: { hyperhive.allowedRecipients = [ ]; }\n",
        '{ ... }: { hyperhive = { model = "m"; }; }\n',
        '{ config, ... }: { config.hyperhive.model = "m"; }\n',
    ):
        with pytest.raises(BuildError, match="nix-instantiate is not on PATH"):
            extract(tmp_path, text)
    # A declaration in another file of the config counts too.
    with pytest.raises(BuildError, match="more.nix declares hyperhive"):
        extract(
            tmp_path,
            "{ imports = [ ./more.nix ]; }\n",
            **{"more.nix": '{ hyperhive.model = "m"; }\n'},
        )


# -- deploys ----------------------------------------------------------------------------


@pytest.fixture
def worker(home, runtime):
    """An agent without the deploying hook: the tests build in this process."""
    spawn.spawn(home, NAME, runtime, "manager")
    (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()
    return Approvals(home, NAME)


def ship(home, runtime, approvals, agent_nix: str, message: str = "change"):
    commit_config(home, NAME, {"agent.nix": agent_nix}, message)
    a = approvals.propose("HEAD", "manager")
    approvals.approve(a.id, "operator")
    return deploy(home, NAME, a.id, runtime)


def policy_path(home) -> Path:
    return home.agent_dir(NAME) / "policy.json"


def test_deployed_policy_follows_successful_deploys(home, runtime, worker):
    assert deployed_policy(home, NAME) == {"allowedRecipients": None}  # nothing deployed
    a = ship(home, runtime, worker, '{ ... }: { hyperhive.allowedRecipients = [ "manager" ]; }\n')
    assert a.state == "deployed"
    assert json.loads(policy_path(home).read_text()) == {"allowedRecipients": ["manager"]}
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["manager"]}
    assert not list(home.agent_dir(NAME).glob("*.new"))
    # The broker enforces it; the manager stays unrestricted.
    broker = Broker(home, lambda n: deployed_policy(home, n))
    with pytest.raises(PolicyRefused, match="allowedRecipients"):
        broker.send(NAME, "operator", "hi")
    broker.send(NAME, "manager", "hi")
    a = ship(home, runtime, worker, "{ ... }: { hyperhive.allowedRecipients = null; }\n")
    assert a.state == "deployed" and deployed_policy(home, NAME)["allowedRecipients"] is None
    broker.send(NAME, "operator", "hi")
    spawn.destroy(home, NAME, runtime, purge=False)
    assert not policy_path(home).exists()
    assert deployed_policy(home, NAME) == {"allowedRecipients": None}


def test_an_evaluation_error_fails_the_deploy_and_keeps_the_old_policy(home, runtime, worker):
    good = ship(
        home, runtime, worker, '{ ... }: { hyperhive.allowedRecipients = [ "manager" ]; }\n'
    )
    bad = ship(
        home, runtime, worker, "{ pkgs, ... }: { hyperhive.allowedRecipients = pkgs.nope; }\n"
    )
    assert bad.state == "failed"
    reason = bad.states["failed"].trailers["Reason"]
    assert reason.startswith("cannot evaluate the hyperhive.* options: attribute 'nope' missing")
    tag = git(home.applied_dir(NAME), "cat-file", "-p", f"failed/{bad.id}")
    assert "attribute 'nope' missing" in tag
    assert "error: attribute 'nope' missing" in home.build_log(NAME, bad.id).read_text()
    assert runtime.status(NAME)["revision"] == good.commit
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["manager"]}
    assert not list(home.agent_dir(NAME).glob("*.new"))


def test_no_nix_with_a_restriction_fails_the_deploy(home, runtime, worker, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda cmd, *a, **k: None if cmd == "nix-instantiate" else real_which(cmd)
    )
    a = ship(home, runtime, worker, '{ ... }: { hyperhive.allowedRecipients = [ "manager" ]; }\n')
    assert a.state == "failed"
    reason = a.states["failed"].trailers["Reason"]
    assert "agent.nix declares hyperhive.* options, but nix-instantiate is not on PATH" in reason
    assert runtime.status(NAME)["state"] == "not deployed" and not policy_path(home).exists()
    # Without a hyperhive attribute the default policy is deployed.
    a = ship(home, runtime, worker, '{ ... }: { networking.hostName = "w"; }\n')
    assert a.state == "deployed" and deployed_policy(home, NAME) == {"allowedRecipients": None}


def test_no_nix_on_path_in_the_cli_deploy(home, runtime, worker):
    commit_config(home, NAME, {"agent.nix": '{ ... }: { hyperhive.model = "m"; }\n'}, "model")
    a = worker.propose("HEAD", "manager")
    worker.approve(a.id, "operator")
    path = os.pathsep.join(
        p
        for p in os.environ["PATH"].split(os.pathsep)
        if not (Path(p) / "nix-instantiate").exists()
    )
    path = os.pathsep.join([str(Path(sys.executable).parent), path])
    r = run_cli(home.root, "deploy", "--here", f"{NAME}#{a.id}", env={"PATH": path})
    assert r.returncode == 1
    assert "cannot evaluate (and enforce) them" in r.stderr
    assert worker.get(a.id).state == "failed"


def test_the_harness_files_carry_claude_and_the_notes_threshold(home, runtime, worker):
    a = ship(
        home,
        runtime,
        worker,
        '{ ... }: { hyperhive = { claude = "/bin/sh"; notesCompactBytes = 4096; }; }\n',
    )
    assert a.state == "deployed"
    Harnesses(home).write_etc(NAME)  # what the local runtime does before starting it
    etc = home.agent_dir(NAME) / "etc"
    assert json.loads((etc / "policy.json").read_text()) == {
        "allowedRecipients": None,
        "allowedBash": None,
        "model": None,
        "claude": "/bin/sh",
        "notesCompactBytes": 4096,
        "allowSubagents": None,  # not set: the harness reads it as false
    }
    assert json.loads((etc / "extra-mcp.json").read_text()) == {}
    bad = ship(home, runtime, worker, '{ ... }: { hyperhive.claude = "./claude"; }\n')
    reason = bad.states["failed"].trailers["Reason"]
    assert bad.state == "failed" and "hyperhive.claude must be null or an absolute path" in reason
    assert deployed_policy(home, NAME)["notesCompactBytes"] == 4096  # the old one stays


def test_a_corrupt_policy_file_is_an_error_not_unrestricted(home, runtime, worker):
    ship(home, runtime, worker, '{ ... }: { hyperhive.allowedRecipients = [ "manager" ]; }\n')
    policy_path(home).write_text("{not json")
    with pytest.raises(PolicyError, match="is not JSON"):
        deployed_policy(home, NAME)


def test_the_daemons_nix_path_is_not_readable_from_a_config(tmp_path, monkeypatch):
    """Restricted evaluation allows the search path: NIX_PATH (NixOS sets nixos-config=…)
    would let a config read host files into its policy, and so into the build log."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.nix").write_text('"top secret"\n')
    monkeypatch.setenv("NIX_PATH", f"host={host}")
    with pytest.raises(BuildError) as e:
        extract(tmp_path, "{ ... }: { hyperhive.model = import <host/secret.nix>; }\n")
    assert "top secret" not in str(e.value)


# -- the read cache ---------------------------------------------------------------------


def write_policy(home, value: dict, age: float | None = None) -> Path:
    """The deployed policy file as a deploy writes it (a new file moved in place);
    `age`: its mtime set that many seconds back."""
    path = policy_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name("policy.json.new")
    new.write_text(json.dumps(value))
    os.replace(new, path)
    if age is not None:
        os.utime(path, ns=(path.stat().st_atime_ns, time.time_ns() - int(age * 1e9)))
    return path


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """The files hyperhive.policy opens, in order."""
    import hyperhive.policy as module

    seen: list[str] = []

    def counting_open(file, *args, **kwargs):
        seen.append(str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(module, "open", counting_open, raising=False)
    monkeypatch.setattr(module, "_cache", {})
    return seen


def test_an_unchanged_policy_is_read_once_and_a_replaced_one_at_once(tmp_path, opens):
    home = Home(tmp_path)
    write_policy(home, {"allowedRecipients": ["manager"]}, age=60)
    for _ in range(3):
        assert deployed_policy(home, NAME) == {"allowedRecipients": ["manager"]}
    assert len(opens) == 1  # the stat said unchanged: no open, no parse
    mine = deployed_policy(home, NAME)
    mine["allowedRecipients"] = None  # a caller's dict is its own
    assert deployed_policy(home, NAME)["allowedRecipients"] == ["manager"]
    write_policy(home, {"allowedRecipients": ["operator"]}, age=60)  # a deploy: a new inode
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["operator"]}
    policy_path(home).unlink()  # destroyed: unrestricted again, not the cached policy
    assert deployed_policy(home, NAME) == {"allowedRecipients": None}
    write_policy(home, {"allowedRecipients": ["manager"]}, age=60)
    policy_path(home).write_text("{not json")  # in place, a new size
    with pytest.raises(PolicyError, match="is not JSON"):
        deployed_policy(home, NAME)


def test_a_policy_rewritten_within_the_clocks_tick_is_not_taken_from_the_cache(tmp_path, opens):
    """The same inode, size and mtime (a rewrite in place within the kernel's coarse file
    clock): a file that new is never cached, so the rewrite is seen."""
    home = Home(tmp_path)
    path = write_policy(home, {"allowedRecipients": ["manager"]})
    stamp = path.stat()
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["manager"]}
    path.write_text(json.dumps({"allowedRecipients": ["zzzzzzz"]}))  # the same length
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size) == (stamp.st_ino, stamp.st_size)
    assert deployed_policy(home, NAME) == {"allowedRecipients": ["zzzzzzz"]}
    assert len(opens) == 2


def test_the_cache_is_bounded(tmp_path, opens, monkeypatch):
    import hyperhive.policy as module

    monkeypatch.setattr(module, "MAX_CACHED", 3)
    home = Home(tmp_path)
    for i in range(7):
        path = home.root / "agents" / f"a{i}" / "policy.json"
        path.parent.mkdir(parents=True)
        path.write_text("{}")
        os.utime(path, ns=(0, 0))
        assert deployed_policy(home, f"a{i}") == {"allowedRecipients": None}
        assert len(module._cache) <= 3
