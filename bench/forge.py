"""Benchmark of the forge's two heaviest pages: server time to render each, beside the git
CLI producing the same data from the same repo in the same run.

(a) The review page `/review/<name>/<id>` of a proposal whose diff against the deployed
    commit is about D lines of `git diff` output (files of several types, changed every
    few lines), at 1x, 10x and 50x D: unified, side by side and one file alone; beside
    `git diff <deployed> <proposed>` (plain and coloured, as a klaus-like viewer would
    show it). The page holds to its budgets (gitstore.diffs.DiffLimits: 2,000 diff lines
    a file, 5,000 a page, 5,000 characters a line), so its time and the memory one GET
    holds at its peak (tracemalloc) stay flat while git's grow with D.
(b) The log page `/repos/<name>/config/log` of a config repo with C commits (written with
    `git fast-import`): page 1, a middle page and the last page; beside
    `git log -n 50 --skip=S` with a format carrying the same fields.

Pages are rendered in-process through Flask's test client with a logged-in session, so
the figures are the app's own time (routing, git reads, diff parsing and highlighting,
templates) without a network or a browser. Nothing here asserts a speed; the script only
checks that both sides show the same thing. Run: .venv/bin/python bench/forge.py [--quick]
(see bench/README.md).
"""

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from transitions import GIT, ROWS, fast_import, git, note, print_rows, record, run, say, timed

from forge_ui import create_app
from forge_ui.diffview import render_patches
from hyperhive import operator, sessions
from hyperhive.agents import create_agent, init_hive
from hyperhive.gitstore import browse
from hyperhive.gitstore.diffs import file_patches
from hyperhive.gitstore.repos import open_repo
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Forge
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State

PER_PAGE = 50  # forge_ui.views.browse.PER_PAGE, checked in main()
LOG_FORMAT = "%H%x00%P%x00%an%x00%ae%x00%ct%x00%s%x00%b%x00%(trailers:only,unfold)%x00%D"


def repeat(fn, repeats: int) -> tuple[list[float], object]:
    """One untimed warm-up call, then `repeats` timed ones; the last result."""
    result = fn()
    samples = []
    for _ in range(repeats):
        t, result = timed(fn)
        samples.append(t)
    return samples, result


def client_for(home: Home):
    app = create_app(Hive(home, LocalRuntime(home)))
    client = app.test_client()
    sid = sessions.start(home, operator.DEFAULT, sessions.Lifetime.of(Forge()))
    with client.session_transaction() as s:
        s["sid"], s["account"] = sid, operator.DEFAULT
    return client


def page(client, path: str) -> str:
    r = client.get(path)
    if r.status_code != 200:
        raise SystemExit(f"GET {path} answered {r.status_code}: {r.get_data(as_text=True)[:500]}")
    return r.get_data(as_text=True)


# -- (a) the review page of a big diff ------------------------------------------------------

# path pattern, first lines, one line of content, last lines: each file stays valid in its
# language (the base commit is deployed, and deploying parses every .nix file).
KINDS = [
    ("modules/m{}.nix", "{ ... }:\n{\n", '  option{n} = "value {n} {w}";\n', "}\n"),
    ("tools/t{}.py", "def run():\n", '    result_{n} = compute("item {n}", {n}, flag="{w}")\n', ""),
    ("notes/n{}.md", "# notes\n\n", "- item {n}: the agent keeps {w} in mind\n", ""),
    ("data/d{}.json", "[\n", '  {{"id": {n}, "name": "entry {n}", "tag": "{w}"}},\n', "  {}\n]\n"),
    ("scripts/s{}.sh", "#!/bin/sh\n", 'echo "step {n}: {w}" && test -d /tmp/{n}\n', ""),
]


def big_files(lines_per_file: int, files: int, changed: bool) -> dict[str, bytes]:
    """`files` files of `lines_per_file` lines; with `changed`, every 4th line has another
    word and every 10th line is new, so each file's diff is one long hunk that exercises
    intra-line marks as well as highlighting."""
    out = {}
    for f in range(files):
        pattern, head, line, tail = KINDS[f % len(KINDS)]
        body = []
        for n in range(lines_per_file):
            word = "changed" if changed and n % 4 == 0 else "original"
            body.append(line.format(n=n, w=word))
            if changed and n % 10 == 5:
                body.append(line.format(n=f"{n}b", w="added"))
        out[pattern.format(f)] = (head + "".join(body) + tail).encode()
    return out


def commit_files(config: Path, files: dict[str, bytes], message: str) -> str:
    for rel, content in files.items():
        path = config / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    run([GIT, "-C", str(config), "add", "-A"])
    run([GIT, "-C", str(config), "commit", "-q", "-m", message])
    return run([GIT, "-C", str(config), "rev-parse", "HEAD"]).strip()


def build_review(home: Home, name: str, diff_lines: int) -> tuple[int, str, str, int]:
    """Deploy a base config, commit the big change and propose it; returns the proposal
    id, the deployed and proposed commits, and the line count of `git diff`."""
    runtime = LocalRuntime(home)
    create_agent(home, name, runtime, "operator")
    (home.applied_dir(name) / "hooks" / "post-receive").unlink()  # deploy in-process below
    approvals = Approvals(home, name)
    files = 10
    # Each file: ~7 header lines, then ~1.35 diff lines per base line (context, -, +, new).
    per_file = max(8, round((diff_lines / files - 7) / 1.35))
    config = home.config_dir(name)
    commit_files(config, big_files(per_file, files, changed=False), "base config")
    base = approvals.propose("HEAD", "manager")
    approvals.approve(base.id, "operator")
    if deploy(home, name, base.id, runtime).state != State.DEPLOYED:
        raise SystemExit(f"the base config of {name} did not deploy")
    new = commit_files(config, big_files(per_file, files, changed=True), "a big change")
    proposal = approvals.propose("HEAD", "manager")
    deployed = approvals.deployed_commit()
    text = git(home.applied_dir(name), "diff", deployed, new)
    return proposal.id, deployed, new, len(text.splitlines())


def peak_growth(fn) -> int:
    """Bytes of Python memory a call holds at its peak beyond what was held before it
    (tracemalloc; one untimed call, as tracing slows Python down)."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def review(home: Home, client, name: str, diff_lines: int, repeats: int, scale: str) -> str:
    approval_id, base, new, lines = build_review(home, name, diff_lines)
    path = f"/review/{name}/{approval_id}"
    applied = home.applied_dir(name)
    git_diff = [GIT, f"--git-dir={applied}", "diff", base, new]

    grown = peak_growth(lambda: page(client, path))
    cpu = time.process_time()
    page(client, path)
    cpu = time.process_time() - cpu
    samples, html = repeat(lambda: page(client, path), repeats)
    record("a", "ours", f"{scale} GET {path} (unified)", samples)
    split, html_split = repeat(lambda: page(client, path + "?view=split"), repeats)
    record("a", "ours", f"{scale} GET {path}?view=split", split)
    first = sorted(f for f in big_files(1, 10, False))[0]
    alone, _ = repeat(lambda: page(client, f"{path}?file={first}"), repeats)
    record("a", "", f"{scale}   one file alone: ?file={first}", alone)
    alone_cpu = time.process_time()
    alone_grown = peak_growth(lambda: page(client, f"{path}?file={first}"))
    alone_cpu = time.process_time() - alone_cpu

    def patches() -> list:
        with open_repo(applied) as repo:
            return file_patches(repo, base.encode(), new.encode())

    samples, files = repeat(patches, repeats)
    record("a", "", f"{scale}   its diffs: gitstore.diffs.file_patches (budgeted)", samples)
    samples, rendered = repeat(lambda: render_patches(files), repeats)
    record("a", "", f"{scale}   its parse + highlight: diffview.render_patches", samples)
    samples, text = repeat(lambda: run(git_diff), repeats)
    record("a", "ref", f"{scale} git diff <deployed> <proposed>", samples)
    samples, _ = repeat(lambda: run([*git_diff[:-2], "--color=always", base, new]), repeats)
    record("a", "ref", f"{scale} git diff --color=always (no syntax highlighting)", samples)

    # Both sides count the same change: the same files with the same +/- counts.
    theirs = {}
    for line in run([GIT, f"--git-dir={applied}", "diff", "--numstat", base, new]).splitlines():
        added, removed, path_ = line.split("\t")
        theirs[path_] = (int(added), int(removed))
    ours = {f.path: (f.added, f.removed) for f in files if f.added is not None}
    if any(theirs[p] != c for p, c in ours.items()) or set(theirs) != {f.path for f in files}:
        raise SystemExit(f"file_patches and git diff --numstat disagree:\n{ours}\n{theirs}")
    for f in rendered:
        for shown in (html, html_split):
            if f'data-path="{f.path}"' not in shown:
                raise SystemExit(f"the review page does not show {f.path}")
    say(f"  {scale}: every file listed; the diffed ones counted as `git diff --numstat` does")
    shown = sum(len(h.lines) for f in rendered for h in f.hunks)
    return (
        f"{scale}: {lines} lines of `git diff` in {len(files)} files, "
        f"{len(text) // 1024} KiB of diff; the page shows {shown} diff lines "
        f"({sum(bool(f.skipped) for f in files)} file(s) listed, not diffed), "
        f"{len(html) // 1024} KiB of HTML (unified), {len(html_split) // 1024} KiB (split); "
        f"one GET: {cpu * 1000:.0f} ms of CPU, Python memory at its peak "
        f"+{grown / 2**20:.1f} MiB; {first} alone: +{alone_grown / 2**20:.1f} MiB at its "
        f"peak ({alone_cpu * 1000:.0f} ms of CPU traced)"
    )


# -- (b) the log page of a long history -----------------------------------------------------


def log_pages(home: Home, client, name: str, commits: int, repeats: int) -> str:
    runtime = LocalRuntime(home)
    create_agent(home, name, runtime, "operator")
    config = home.config_dir(name)
    t, _ = timed(lambda: fast_import(config, commits))
    total = commits + 1  # and the agent's first commit
    last = (total + PER_PAGE - 1) // PER_PAGE
    pages = sorted({1, max(1, last // 2), last})
    for n in pages:
        path = f"/repos/{name}/config/log" + (f"?page={n}" if n > 1 else "")
        skip = (n - 1) * PER_PAGE
        argv = [GIT, f"--git-dir={config / '.git'}", "log", f"-n{PER_PAGE}", f"--skip={skip}"]
        argv.append(f"--format={LOG_FORMAT}%x01")
        samples, html = repeat(lambda p=path: page(client, p), repeats)
        record("b", "ours", f"GET {path}", samples)
        if n == last:

            def walk_only(skip=skip) -> browse.LogPage:
                with open_repo(config) as repo:
                    return browse.log_page(repo, browse.head(repo), skip=skip, limit=PER_PAGE)

            walked, _ = repeat(walk_only, repeats)
            record("b", "", "  its walk: gitstore.browse.log_page (dulwich)", walked)
        samples, out = repeat(lambda a=argv: run(a), repeats)
        record("b", "ref", f"git log -n {PER_PAGE} --skip={skip} --format=<same fields>", samples)
        theirs = [r.lstrip("\n").split("\x00", 1)[0] for r in out.split("\x01")[:-1]]
        ours = re.findall(rf'href="/repos/{name}/config/commit/([0-9a-f]{{40}})"', html)
        if ours != theirs:
            raise SystemExit(f"page {n}: the log page and git log list different commits")
        if n > 1:  # reached by "older →": the previous page's cursor (one commit: linear)
            cursor = f"/repos/{name}/config/log?page={n}&after={theirs[0]}"
            samples, html = repeat(lambda p=cursor: page(client, p), repeats)
            record("b", "ours", f"GET …?page={n}&after=<cursor> (the pager's link)", samples)
            if re.findall(rf'href="/repos/{name}/config/commit/([0-9a-f]{{40}})"', html) != ours:
                raise SystemExit(f"page {n}: the cursor page lists other commits")
    say(f"  pages {pages}: both sides list the same commits in the same order")
    packs = len(list((config / ".git" / "objects" / "pack").glob("*.pack")))
    return (
        f"{total} commits ({packs} pack from git fast-import in {t:.1f} s); pages {pages} of "
        f"{PER_PAGE} commits"
    )


# -- report ---------------------------------------------------------------------------------


def table(facts: dict[str, str]) -> None:
    titles = {
        "a": "(a) review page of a big diff",
        "b": "(b) log page of a long history",
    }
    print_rows(titles)
    # (a): each page against plain `git diff`; (b): each page against its own `git log`.
    a_ours = [r for r in ROWS if r.section == "a" and r.who == "ours"]
    a_refs: dict = {}  # per scale: its first reference, plain `git diff`
    for r in ROWS:
        if r.section == "a" and r.who == "ref":
            a_refs.setdefault(r.label.split()[0], r)
    b_refs = {  # by page: `git log --skip` of that page
        int(re.search(r"--skip=(\d+)", r.label)[1]) // PER_PAGE + 1: r
        for r in ROWS
        if r.section == "b" and r.who == "ref"
    }
    b_ours = [r for r in ROWS if r.section == "b" and r.who == "ours"]
    pairs = [("a", r, a_refs[r.label.split()[0]]) for r in a_ours] + [
        ("b", o, b_refs[int(m[1]) if (m := re.search(r"page=(\d+)", o.label)) else 1])
        for o in b_ours
    ]
    label = max(len(o.label) for _, o, _ in pairs)
    for section, ours, ref in pairs:
        ratio = statistics.median(ours.samples) / statistics.median(ref.samples)
        say(f"ratio of medians, ours / reference: ({section}) {ours.label:<{label}} {ratio:6.1f}x")
    say("")
    for section, texts in facts.items():
        for text in texts if isinstance(texts, list) else [texts]:
            note(f"({section}) {text}.")
    note(
        "ours: Flask test client in-process (routing, session, git reads with dulwich, "
        "unidiff + pygments, Jinja); ref: one git CLI process, its start-up included. The "
        "first call of each row is a warm-up and not counted."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--diff-lines", type=int, default=8000, help="size of the diff (a) at 1x (then 10x, 50x)"
    )
    parser.add_argument("--commits", type=int, default=10_000, help="history length (b)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.diff_lines, args.commits, args.repeats = 20, 150, 1
    if GIT is None:
        parser.error("the git CLI is needed for the references")
    from forge_ui.views import browse as browse_view

    assert browse_view.PER_PAGE == PER_PAGE, "forge_ui.views.browse.PER_PAGE changed"
    say(
        f"hyperhive bench/forge.py: diff-lines={args.diff_lines} commits={args.commits} "
        f"repeats={args.repeats}"
    )
    started = time.perf_counter()
    facts = {}
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        home = Home(Path(tmp) / "hive")
        init_hive(home, LocalRuntime(home), "operator")
        client = client_for(home)
        facts["a"] = []
        for scale in (1, 10, 50):
            lines = args.diff_lines * scale
            say(f"(a) {scale}x: a proposal with a ~{lines}-line diff …")
            name = f"bench-review-{scale}x"
            facts["a"].append(review(home, client, name, lines, args.repeats, f"{scale}x"))
        say(f"(b) a config repo with {args.commits} commits …")
        facts["b"] = log_pages(home, client, "bench-log", args.commits, args.repeats)
        gc.collect()  # close dulwich's pack files before the directory goes away
    table(facts)
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
