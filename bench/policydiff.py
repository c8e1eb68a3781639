"""Benchmark of the effective-policy diff (hyperhive/workflow/policydiff.py): what a
commit's evaluation costs the first time and from the cache, beside deploy's own
evaluation of the same config, at 1x/10x/50x config sizes (N Bash patterns, N/10 MCP
servers, N/10 packages; N = 10, 100, 500).

(a) ours, cold: `evaluate_root` (one nix-instantiate: the options and the packages, the
    stub nixpkgs written first) on a checked-out config.
(b) ref: `policy.evaluate` on the same config (the options alone: deploy's evaluation,
    one nix-instantiate); and `nix-instantiate --eval --expr 1` (the process's floor).
(c) ours, cached: `policydiff.cached` of that commit (a JSON file read).
(d) ours, the table: `diff_policies` + `diff_packages` of the config against one with
    every other pattern, server and package changed.

Nothing is asserted about speed; the script checks both evaluations agree.
Run: .venv/bin/python bench/policydiff.py [--quick] (see bench/README.md).
"""

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from transitions import ROWS, note, print_rows, record, say

from hyperhive.home import Home
from hyperhive.runtime import policy
from hyperhive.workflow import policydiff

SIZES = {"1x": 10, "10x": 100, "50x": 500}


def print_nothing(line: str) -> None:
    pass


def agent_nix(n: int, variant: int = 0) -> str:
    bash = " ".join(f'"tool{i + variant * (i % 2)} *"' for i in range(n))
    servers = "\n".join(
        f'    extraMcpServers.s{i} = {{ command = "/bin/s{i + variant * (i % 2)}"; '
        f'args = [ "--x" ]; env.K{i} = "v"; }};'
        for i in range(max(1, n // 10))
    )
    packages = " ".join(f"p{i + variant * (i % 2)}" for i in range(max(1, n // 10)))
    return f"""{{ pkgs, ... }}:
{{
  environment.systemPackages = with pkgs; [ {packages} ];
  hyperhive = {{
    allowedRecipients = [ "manager" "operator" ];
    allowedBash = [ {bash} ];
{servers}
  }};
}}
"""


def timed(fn, *args, **kw) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kw)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1x only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    sizes = {"1x": SIZES["1x"]} if args.quick else SIZES
    nix = shutil.which("nix-instantiate")
    if nix is None:
        raise SystemExit("nix-instantiate is not on PATH: nothing to measure")
    with tempfile.TemporaryDirectory(prefix="bench-policydiff-") as tmp:
        home = Home(Path(tmp) / "hive")
        for size, n in sizes.items():
            root = Path(tmp) / size
            root.mkdir()
            (root / "agent.nix").write_text(agent_nix(n))
            cold, ref, floor, hit = [], [], [], []
            for i in range(repeats):
                t, ours = timed(policydiff.evaluate_root, root)
                cold.append(t)
                t, theirs = timed(policy.evaluate, root, print_nothing)
                ref.append(t)
                assert ours["policy"] == theirs, "the two evaluations disagree"
                assert len(ours["packages"]) == max(1, n // 10)
                t, _ = timed(subprocess.run, [nix, "--eval", "--expr", "1"], capture_output=True)
                floor.append(t)
                sha = f"{i:040x}"
                policydiff._store(
                    policydiff.cache_dir(home) / f"{sha}.json",
                    {"evaluator": policydiff.EVALUATOR, "result": ours},
                )
                t, found = timed(policydiff.cached, home, sha)
                assert found == ours
                hit.append(t)
            other = Path(tmp) / f"{size}-other"
            other.mkdir()
            (other / "agent.nix").write_text(agent_nix(n, variant=1000))
            after = policydiff.evaluate_root(other)

            def table(before=ours, after=after):
                rows = policydiff.diff_policies(before["policy"], after["policy"])
                return rows + policydiff.diff_packages(before["packages"], after["packages"])

            rows_t = []
            for _ in range(repeats):
                t, rows = timed(table)
                rows_t.append(t)
            record(size, "ours", f"evaluation, cold (options + packages), N={n}", cold)
            record(size, "ref", "deploy's evaluation (options only)", ref)
            record(size, "ref", "nix-instantiate --eval --expr 1", floor)
            record(size, "ours", "evaluation, from the cache", hit)
            record(size, "ours", f"the table ({len(rows)} rows)", rows_t)
    print_rows({size: f"{size}: N = {n}" for size, n in sizes.items()})
    note(
        "The cold evaluation is one nix-instantiate like deploy's; the packages add the "
        "stub file and their evaluation. A review pays it once per commit; then the cache."
    )


if __name__ == "__main__":
    ROWS.clear()
    say("policy diff: evaluation cold vs cached, beside deploy's evaluation")
    main()
