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
(c) A change that moves R files to another directory with a one-line edit each, deletes
    R/4 and adds R/4 (R at 1x, 10x, 50x): rename and copy detection (gitstore.renames)
    cold (no blob hashed yet) and warm, and its commit page (the review page's diff, no
    deploy needed); beside
    `git diff -M -C --name-status`. Past the detection's bound (sources x destinations
    over 400^2) the page shows deletions and additions, as `git diff -M -C -l400` does;
    the script checks that both name the same statuses and similarities.

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

from forge_ui import blobview, create_app, diffcache, policy_view
from forge_ui.diffview import render_patches
from hyperhive import operator, sessions
from hyperhive.agents import create_agent, init_hive
from hyperhive.gitstore import linediff, renames
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


# The untimed first call of each row; --smoke leaves it out (its one timed call is all a
# check of the row needs, and the warm-ups were a third of its work).
WARM_UP = True


def repeat(fn, repeats: int) -> tuple[list[float], object]:
    """One untimed warm-up call (unless WARM_UP is off), then `repeats` timed ones; the
    last result."""
    result = fn() if WARM_UP else None
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
    text = r.get_data(as_text=True)
    r.close()  # as a WSGI server does once it sent it (background highlighting starts then)
    return text


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

    def cold() -> tuple[str, float, int]:
        """The page of a diff not rendered before (diffcache emptied, outside the time):
        HTML, CPU seconds and how many files were left plain for the background."""
        cpu = time.process_time()
        html = page(client, path)
        return html, time.process_time() - cpu, html.count("syntax highlighting on its way")

    def empty() -> None:  # the background highlighting of the call before done, then gone
        diffcache.FINISHER.wait(120)
        diffcache.PAGES.clear()

    empty()
    cold()  # templates and lexers loaded: "cold" is this diff's, not the process's
    samples, cpus, late = [], [], 0
    for _ in range(repeats):
        empty()
        t, (html, cpu, late) = timed(cold)
        samples.append(t)
        cpus.append(cpu)
    record("a", "ours", f"{scale} GET {path}, cold (unified)", samples)
    diffcache.FINISHER.wait(120)
    samples, html = repeat(lambda: page(client, path), repeats)
    record("a", "ours", f"{scale} GET {path}, warm (unified)", samples)
    warm_cpu = time.process_time()
    page(client, path)
    warm_cpu = time.process_time() - warm_cpu
    split, html_split = repeat(lambda: page(client, path + "?view=split"), repeats)
    record("a", "ours", f"{scale} GET {path}?view=split, warm", split)
    # A 304 needs a page that says the same twice: the policy diff (nix, in the background)
    # evaluated, and no age on it ("5s ago") moved between the two GETs.
    deadline = time.monotonic() + 120
    while policy_view.WARMER.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = []
    for _ in range(repeats + 1):
        for _attempt in range(5):
            tag = client.get(path).headers["ETag"]
            t, r = timed(lambda t=tag: client.get(path, headers={"If-None-Match": t}))
            if r.status_code == 304:
                samples.append(t)
                break
        else:
            raise SystemExit(f"GET {path} with its ETag never answered 304")
    record("a", "ours", f"{scale} GET {path}, If-None-Match: its ETag (304)", samples[1:])
    first = sorted(f for f in big_files(1, 10, False))[0]
    alone, _ = repeat(lambda: page(client, f"{path}?file={first}"), repeats)
    record("a", "", f"{scale}   one file alone: ?file={first}, warm", alone)

    def patches() -> list:
        with open_repo(applied) as repo:
            return file_patches(repo, base.encode(), new.encode())

    samples, files = repeat(patches, repeats)
    record("a", "", f"{scale}   its diffs: gitstore.diffs.file_patches (budgeted)", samples)
    samples, rendered = repeat(lambda: render_patches(files), repeats)
    record("a", "", f"{scale}   its parse + full highlight: diffview.render_patches", samples)
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
    if "syntax highlighting on its way" in html:
        raise SystemExit("the warm page is not highlighted in full")
    say(f"  {scale}: every file listed; the diffed ones counted as `git diff --numstat` does")
    shown = sum(len(h.lines) for f in rendered for h in f.hunks)
    return (
        f"{scale}: {lines} lines of `git diff` in {len(files)} files, "
        f"{len(text) // 1024} KiB of diff; the page shows {shown} diff lines "
        f"({sum(bool(f.skipped) for f in files)} file(s) listed, not diffed), "
        f"{len(html) // 1024} KiB of HTML (unified), {len(html_split) // 1024} KiB (split); "
        f"cold GET: {statistics.median(cpus) * 1000:.0f} ms of CPU (median), {late} of "
        f"{len(files)} files left plain for the background highlighting in the last one; "
        f"warm GET: {warm_cpu * 1000:.0f} ms of CPU; "
        f"diffcache holds {diffcache.PAGES.weight / 2**20:.1f} MiB (estimated) for it"
    )


# -- (d) a line diff of many interleaved changes ----------------------------------------------


def line_diff(home: Home, name: str, changed: int, repeats: int, scale: str) -> str:
    """One file of 2 x `changed` lines where every other line changes: the worst case of a
    quadratic diff, and a diff of `changed` hunks' worth of lines."""
    if not home.config_dir(name).exists():
        create_agent(home, name, LocalRuntime(home), "operator")
    config = home.config_dir(name)
    rel = f"big/interleaved-{scale}.py"
    old = "".join(f"value_{n} = compute({n}, 'original')\n" for n in range(2 * changed))
    new = "".join(
        f"value_{n} = compute({n}, '{'changed' if n % 2 else 'original'}')\n"
        for n in range(2 * changed)
    )
    a = commit_files(config, {rel: old.encode()}, "before")
    b = commit_files(config, {rel: new.encode()}, "after")

    def ours() -> list:  # the file alone (?file=): a file this big is not diffed beside others
        with open_repo(config) as repo:
            return file_patches(repo, a.encode(), b.encode(), only=rel)

    samples, (patch,) = repeat(ours, repeats)
    label = f"{scale} {changed} interleaved changed lines: file_patches, the file alone"
    record("d", "ours", label, samples)
    a_lines, b_lines = old.encode().splitlines(True), new.encode().splitlines(True)
    samples, _ = repeat(lambda: linediff.opcodes(a_lines, b_lines), repeats)
    record("d", "", f"{scale}   the line diff alone: linediff.opcodes", samples)
    git_dir = config / ".git"
    samples, _ = repeat(lambda: run([GIT, f"--git-dir={git_dir}", "diff", a, b]), repeats)
    record("d", "ref", f"{scale} git diff (the whole patch)", samples)
    numstat = run([GIT, f"--git-dir={git_dir}", "diff", "--numstat", a, b]).split("\t")
    if (patch.added, patch.removed) != (int(numstat[0]), int(numstat[1])):
        raise SystemExit(f"{rel}: ours +{patch.added} -{patch.removed}, git {numstat[:2]}")
    say(f"  {scale}: +{patch.added} -{patch.removed}, as `git diff --numstat` counts them")
    return f"{scale}: {2 * changed} lines, {changed} changed, one in two"


# -- (e) the blob page of a big file --------------------------------------------------------


def blob_page(home: Home, client, name: str, size: int, repeats: int, scale: str) -> str:
    if not home.config_dir(name).exists():
        create_agent(home, name, LocalRuntime(home), "operator")
    config = home.config_dir(name)
    body, n = [], 0
    while sum(map(len, body)) < size - 80:
        body.append(f"def step_{n}(x):\n    return helper(x, {n}, 'text {n}')  # step\n")
        n += 1
    rel = f"big/blob-{scale}.py"
    data = "".join(body).encode()
    commit_files(config, {rel: data}, f"a {len(data)}-byte file")
    path = f"/repos/{name}/config/blob/{rel}"

    def empty() -> None:  # the background highlighting of the call before done, then gone
        blobview.FINISHER.wait(120)
        blobview._highlighted.clear()

    empty()
    page(client, path)
    samples = []
    for _ in range(repeats):
        empty()
        t, html = timed(lambda: page(client, path))
        samples.append(t)
    record("e", "ours", f"{scale} GET {path} ({len(data) // 1024} KiB), cold", samples)
    blobview.FINISHER.wait(120)
    samples, _ = repeat(lambda: page(client, path), repeats)
    record("e", "", f"{scale}   the same, warm (its HTML kept by blob id)", samples)
    git_dir = config / ".git"
    show = [GIT, f"--git-dir={git_dir}", "show", f"HEAD:{rel}"]
    samples, text = repeat(lambda: run(show), repeats)
    record("e", "ref", f"{scale} git show HEAD:{rel}", samples)
    lines = data.count(b"\n")
    if text.encode() != data or f'id="L-{lines}"' not in html:
        raise SystemExit(f"{path}: the page or git show does not hold the file")
    why = re.search(r"without highlighting \(([^)]*)\)", html)
    return f"{scale}: {len(data)} bytes, {lines} lines, {len(html) // 1024} KiB of HTML, " + (
        f"plain: {why[1]}" if why else "highlighted"
    )


# -- (c) renames on the review page ---------------------------------------------------------


def build_renames(home: Home, name: str, files: int, prefix: str) -> tuple[str, str]:
    """In agent `name`'s config repo (made if missing), a commit of `files` files under
    `prefix`, then one that moves 3/4 of them (one line edited in each), deletes the rest
    and adds as many new ones; the two commits."""
    if not home.config_dir(name).exists():
        create_agent(home, name, LocalRuntime(home), "operator")
    config = home.config_dir(name)
    base = {f"{prefix}/{rel}": body for rel, body in big_files(100, files, changed=False).items()}
    old = commit_files(config, base, "base config")
    paths = sorted(base)
    moved, gone = paths[: files * 3 // 4], paths[files * 3 // 4 :]
    for rel in moved + gone:
        (config / rel).unlink()
    change = {
        rel.replace(f"{prefix}/", f"{prefix}/moved/", 1): base[rel].replace(
            b"original", b"edited", 1
        )
        for rel in moved
    }
    fresh = big_files(60, len(gone), changed=True)
    change.update(
        {
            f"{prefix}/fresh/{rel}": body.replace(b"item", b"fresh item")
            for rel, body in fresh.items()
        }
    )
    return old, commit_files(config, change, "move things around")


def renames_review(home: Home, client, name: str, files: int, repeats: int, scale: str) -> str:
    base, new = build_renames(home, name, files, f"s{scale}")
    # The commit page: the review page's diff machinery (diffview.diff_page) on the same
    # two commits, without deploying a base first.
    path = f"/repos/{name}/config/commit/{new}"
    git_dir = home.config_dir(name) / ".git"
    limit = renames.RenameLimits().files

    def detect() -> list:
        with open_repo(git_dir.parent) as repo:
            return file_patches(repo, base.encode(), new.encode())

    cold = []
    for _ in range(repeats):
        renames._spans = renames.LRU(renames._spans.size)  # nothing hashed yet
        t, found = timed(detect)
        cold.append(t)
    record("c", "ours", f"{scale} gitstore.diffs.file_patches, renames cold", cold)
    samples, found = repeat(detect, repeats)
    record("c", "", f"{scale}   the same, blobs hashed before (a page seen again)", samples)
    samples, _ = repeat(lambda: page(client, path), repeats)
    record("c", "", f"{scale}   GET /repos/{name}/config/commit/<sha>", samples)
    cmd = [GIT, f"--git-dir={git_dir}", "diff", "-M", "-C", "--name-status"]
    samples, theirs = repeat(lambda: run([*cmd, base, new]), repeats)
    record("c", "ref", f"{scale} git diff -M -C --name-status", samples)
    samples, _ = repeat(lambda: run([*cmd[:-1], base, new]), repeats)
    record("c", "", f"{scale}   git diff -M -C (the patch)", samples)

    ours = []
    for f in found:
        code = {"added": "A", "deleted": "D", "modified": "M"}.get(f.status)
        if code:
            ours.append(f"{code}\t{f.path if f.status != 'deleted' else f.old_path}")
        else:
            ours.append(f"{f.status[0].upper()}{f.similarity:03d}\t{f.old_path}\t{f.path}")
    bounded = run([*cmd, f"-l{limit}", base, new]).splitlines()
    if sorted(ours) != sorted(bounded):
        raise SystemExit(f"renames and git diff -M -C -l{limit} disagree:\n{ours}\n{bounded}")
    detected = sum(f.status in ("renamed", "copied") for f in found)
    git_detected = sum(line[0] in "RC" for line in theirs.splitlines())
    say(f"  {scale}: statuses and similarities as `git diff -M -C -l{limit}` names them")
    return (
        f"{scale}: {files} files, {len(found)} listed; renames/copies found: ours {detected}, "
        f"git (default limit) {git_detected}"
        + ("" if detected == git_detected else f" (past our bound of {limit}^2 pairs)")
    )


# -- (b) the log page of a long history -----------------------------------------------------


def log_pages(home: Home, client, name: str, commits: int, repeats: int, scale: str) -> str:
    """Page 1, the middle page and the last page of a `commits`-commit log: the first by
    its URL, the others by the pager's link (a cursor: the commit the page starts at),
    and the last also by ?page=N alone (the walk skips what comes before it)."""
    runtime = LocalRuntime(home)
    create_agent(home, name, runtime, "operator")
    config = home.config_dir(name)
    t, _ = timed(lambda: fast_import(config, commits))
    total = commits + 1  # and the agent's first commit
    last = (total + PER_PAGE - 1) // PER_PAGE
    pages = sorted({1, max(1, last // 2), last})
    base = f"/repos/{name}/config/log"
    first = None
    for n in pages:
        skip = (n - 1) * PER_PAGE
        argv = [GIT, f"--git-dir={config / '.git'}", "log", f"-n{PER_PAGE}", f"--skip={skip}"]
        argv.append(f"--format={LOG_FORMAT}%x01")
        samples, out = repeat(lambda a=argv: run(a), repeats)
        theirs = [r.lstrip("\n").split("\x00", 1)[0] for r in out.split("\x01")[:-1]]
        if n == 1:
            samples_ours, html = repeat(lambda: page(client, base), repeats)
            record("b", "ours", f"{scale} GET {base} (page 1)", samples_ours)
            first = statistics.median(samples_ours)
        else:  # reached by "older →": the previous page's cursor (one commit: linear)
            cursor = f"{base}?page={n}&after={theirs[0]}"
            samples_ours, html = repeat(lambda p=cursor: page(client, p), repeats)
            record(
                "b",
                "ours",
                f"{scale} GET …?page={n}&after=<cursor> (the pager's link)",
                samples_ours,
            )
        record(
            "b",
            "ref",
            f"{scale} git log -n {PER_PAGE} --skip={skip} --format=<same fields>",
            samples,
        )
        ours = re.findall(rf'href="/repos/{name}/config/commit/([0-9a-f]{{40}})"', html)
        if ours != theirs:
            raise SystemExit(f"page {n}: the log page and git log list different commits")
        if n == last and n > 1:
            deep, html = repeat(lambda p=f"{base}?page={n}": page(client, p), max(1, repeats // 2))
            record("b", "", f"{scale}   GET …?page={n} without a cursor (walks {skip} first)", deep)
            if re.findall(rf'href="/repos/{name}/config/commit/([0-9a-f]{{40}})"', html) != ours:
                raise SystemExit(f"page {n}: the page without a cursor lists other commits")
            ratio = statistics.median(samples_ours) / first
            say(f"  {scale}: last page by the pager's link / page 1: {ratio:.2f}x")
    say(f"  {scale}: pages {pages}: both sides list the same commits in the same order")
    packs = len(list((config / ".git" / "objects" / "pack").glob("*.pack")))
    return (
        f"{scale}: {total} commits ({packs} pack from git fast-import in {t:.1f} s); pages "
        f"{pages} of {PER_PAGE} commits"
    )


# -- report ---------------------------------------------------------------------------------


def table(facts: dict[str, str]) -> None:
    titles = {
        "a": "(a) review page of a big diff",
        "b": "(b) log pages of a long history",
        "c": "(c) renames: a change that moves files around",
        "d": "(d) a line diff of many interleaved changes",
        "e": "(e) the blob page of a big file",
    }
    print_rows(titles)
    # Each `ours` row against the first `ref` row of its section and scale; (b): against
    # `git log --skip` of the same page.
    refs: dict = {}
    for r in ROWS:
        if r.who == "ref" and r.section != "b":
            refs.setdefault((r.section, r.label.split()[0]), r)
    b_refs = {  # by scale and page: `git log --skip` of that page
        (r.label.split()[0], int(re.search(r"--skip=(\d+)", r.label)[1]) // PER_PAGE + 1): r
        for r in ROWS
        if r.section == "b" and r.who == "ref"
    }
    pairs = []
    for o in ROWS:
        if o.who != "ours":
            continue
        scale = o.label.split()[0]
        if o.section == "b":
            n = int(m[1]) if (m := re.search(r"page=(\d+)", o.label)) else 1
            pairs.append(("b", o, b_refs[scale, n]))
        elif o.section == "c":
            pairs.append(
                (
                    "c",
                    o,
                    next(
                        r
                        for r in ROWS
                        if r.section == "c" and r.who == "ref" and r.label.split()[0] == scale
                    ),
                )
            )
        else:
            pairs.append((o.section, o, refs[o.section, scale]))
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
        "unidiff + pygments, Jinja); ref: one git CLI process, its start-up included. "
        + (
            "The first call of each row is a warm-up and not counted."
            if WARM_UP
            else "--smoke: no warm-up call, each row's one call is timed."
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--diff-lines", type=int, default=5000, help="size of the diff (a) at 1x (then 10x, 50x)"
    )
    parser.add_argument("--commits", type=int, default=1000, help="history length (b) at 1x")
    parser.add_argument("--files", type=int, default=20, help="files moved etc. (c) at 1x")
    parser.add_argument(
        "--changed", type=int, default=200, help="interleaved changed lines (d) at 1x"
    )
    parser.add_argument("--blob-kib", type=int, default=20, help="blob size (e) at 1x, KiB")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--sections", default="abcde", help="which sections to run (abcde)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick made smaller still: every section and row, for tests/test_bench.py",
    )
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.quick:
        args.diff_lines, args.commits, args.repeats, args.files = 20, 60, 1, 2
        args.changed, args.blob_kib = 10, 1
    if args.smoke:  # (b) still has 2, 3 and 3 pages at 1x, 10x, 50x
        args.diff_lines, args.commits, args.files, args.changed = 4, 50, 1, 2
        global WARM_UP
        WARM_UP = False
    if GIT is None:
        parser.error("the git CLI is needed for the references")
    from forge_ui.views import browse as browse_view

    assert browse_view.PER_PAGE == PER_PAGE, "forge_ui.views.browse.PER_PAGE changed"
    say(
        f"hyperhive bench/forge.py: diff-lines={args.diff_lines} commits={args.commits} "
        f"files={args.files} changed={args.changed} blob-kib={args.blob_kib} "
        f"repeats={args.repeats} (each at 1x, 10x, 50x)"
    )
    started = time.perf_counter()
    facts: dict[str, list[str]] = {k: [] for k in "abcde" if k in args.sections}
    with tempfile.TemporaryDirectory(prefix="hyperhive-bench-") as tmp:
        home = Home(Path(tmp) / "hive")
        init_hive(home, LocalRuntime(home), "operator")
        client = client_for(home)
        for scale in (1, 10, 50) if "a" in args.sections else ():
            x = f"{scale}x"
            lines = args.diff_lines * scale
            say(f"(a) {x}: a proposal with a ~{lines}-line diff …")
            facts["a"].append(review(home, client, f"bench-review-{x}", lines, args.repeats, x))
        for scale in (1, 10, 50) if "b" in args.sections else ():
            x = f"{scale}x"
            say(f"(b) {x}: a config repo with {args.commits * scale} commits …")
            facts["b"].append(
                log_pages(home, client, f"bench-log-{x}", args.commits * scale, args.repeats, x)
            )
        for scale in (1, 10, 50) if "c" in args.sections else ():
            x = f"{scale}x"
            say(f"(c) {x}: a proposal that moves {args.files * scale} files around …")
            facts["c"].append(
                renames_review(home, client, "bench-renames", args.files * scale, args.repeats, x)
            )
        for scale in (1, 10, 50) if "d" in args.sections else ():
            x = f"{scale}x"
            say(f"(d) {x}: a file with {args.changed * scale} interleaved changed lines …")
            facts["d"].append(line_diff(home, "bench-lines", args.changed * scale, args.repeats, x))
        for scale in (1, 10, 50) if "e" in args.sections else ():
            x = f"{scale}x"
            size = min(args.blob_kib * scale * 1024, browse_view.INLINE_MAX)
            say(f"(e) {x}: the blob page of a {size // 1024} KiB .py …")
            facts["e"].append(blob_page(home, client, "bench-blob", size, args.repeats, x))
        gc.collect()  # close dulwich's pack files before the directory goes away
    table(facts)
    say(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
