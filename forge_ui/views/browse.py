"""Repo browser: the meta repo and every agent's proposed (config) and applied repos.

URLs (`repo` is `meta`, `NAME/config` or `NAME/applied`; revisions go in `?rev=`, so a tag
like `deployed/3` never mixes with a path):

    /repos                              index: every repo with its head commit
    /repos/<repo>/log?rev=&page=        history, 50 commits a page (meta: + what is deployed)
    /repos/<repo>/commit/<rev>          one commit: message, trailers, diff vs first parent
    /repos/<repo>/tree/[<path>]?rev=    a directory
    /repos/<repo>/blob/<path>?rev=      a file, highlighted
    /repos/<repo>/raw/<path>?rev=       a file as text/plain, never rendered by the browser
    /repos/<repo>/tags                  tags grouped by workflow state

Everything is read from git objects with dulwich; a path is looked up in trees only.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dulwich.repo import Repo
from flask import Blueprint, Response, abort, redirect, render_template, request
from flask import url_for as flask_url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, BuildError

from forge_ui import blobview, etags
from forge_ui.context import hive
from forge_ui.diffcache import diff_page
from hyperhive.errors import HiveError, UnknownCommit
from hyperhive.gitstore import browse as git
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.workflow import meta
from hyperhive.workflow.states import ORDER

PER_PAGE = 50
SINCE_SEARCH = 1000  # meta commits read to find when each pin was set
INLINE_MAX = 1 << 20  # larger blobs get a raw link instead of an inline view
KINDS = ("config", "applied")
META = "meta"
REFUSED_ENCODINGS = ("%2f", "%2e", "%5c", "%00")


class RepoConverter(BaseConverter):
    """`meta` or `NAME/config` or `NAME/applied`: one URL variable names one repo."""

    regex = r"meta|[a-z][a-z0-9-]{0,30}/(?:config|applied)"
    part_isolating = False


bp = Blueprint("browse", __name__)
# Deferred functions run in the order recorded: the converter exists before the rules below.
bp.record(lambda state: state.app.url_map.converters.setdefault("hiverepo", RepoConverter))


@bp.url_defaults
def name_and_kind(endpoint: str, values: dict) -> None:
    """`url_for('browse.log', name='manager', kind='config')` is the same as
    `url_for('browse.log', repo='manager/config')`."""
    if "repo" not in values and "name" in values and "kind" in values:
        values["repo"] = f"{values.pop('name')}/{values.pop('kind')}"


@bp.before_request
def refuse_encoded_separators():
    """`%2F`, `%2E`, `%5C` and `%00` in the path are never in a link this app makes; a
    request with one is probing for traversal, so refuse it before routing means anything."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    path = raw.split("?", 1)[0].lower()
    if any(code in path for code in REFUSED_ENCODINGS):
        abort(400, description="encoded '/', '.', '\\' or NUL in a repository URL")


# ---------------------------------------------------------------------------- repos


@dataclass(frozen=True)
class Browsed:
    id: str  # the URL value: meta, NAME/config, NAME/applied
    path: Path
    agent: str | None
    kind: str  # meta, config, applied


def locate(home: Home, repo_id: str) -> Browsed:
    """The repo a URL names, through Home's validating methods; 404 if it does not exist."""
    if repo_id == META:
        return Browsed(META, home.require().meta_dir, None, META)
    name, _, kind = repo_id.partition("/")
    if kind not in KINDS:
        abort(404, description=f"unknown repository {repo_id!r}")
    home.require_agent(name)  # InvalidName -> 400, UnknownAgent -> 404
    path = home.config_dir(name) if kind == "config" else home.applied_dir(name)
    if not (path / ("HEAD" if kind == "applied" else ".git/HEAD")).is_file():
        abort(404, description=f"{repo_id} has no repository")
    return Browsed(repo_id, path, name, kind)


def all_repos(home: Home) -> list[Browsed]:
    found = [locate(home, META)]
    for name in home.agent_names():
        for kind in KINDS:
            try:
                found.append(locate(home, f"{name}/{kind}"))
            except (HTTPException, HiveError):  # a half-created agent is just not listed
                continue
    return found


def opened(repo_id: str) -> tuple[Browsed, Repo]:
    where = locate(hive().home, repo_id)
    return where, open_repo(where.path)


def resolve_or_404(repo: Repo, where: Browsed, rev: str) -> bytes:
    try:
        return git.resolve(repo, rev)
    except UnknownCommit as e:
        abort(404, description=f"{where.id}: {e}")


@contextmanager
def at_rev(repo_id: str, rev: str) -> Iterator[tuple[Browsed, Repo, bytes]]:
    """The opening of every view of one revision: the repo the URL names (404 if none),
    open for the block, and `rev` resolved in it (404 if unknown)."""
    where, repo = opened(repo_id)
    with repo:
        yield where, repo, resolve_or_404(repo, where, rev)


def rev_arg() -> str:
    rev = request.args.get("rev", "HEAD") or "HEAD"
    if not git.valid_rev(rev):
        abort(400, description=f"invalid revision {rev!r}")
    return rev


def path_or_404(path: str) -> str:
    try:
        git.split_path(path)
    except git.UnknownPath as e:
        abort(400, description=str(e))
    return path


# ---------------------------------------------------------------------------- templates


def maybe_url(endpoint: str, **values) -> str | None:
    """A link to another part of the UI, or None if that part is not there."""
    try:
        return flask_url_for(endpoint, **values)
    except BuildError:
        return None


def rev_query(rev: str) -> dict:
    return {} if rev == "HEAD" else {"rev": rev}


def crumbs(path: str) -> list[tuple[str, str]]:
    """(name, path so far) for every segment of `path`."""
    out, so_far = [], []
    for part in path.split("/") if path else []:
        so_far.append(part)
        out.append((part, "/".join(so_far)))
    return out


def render(template: str, where: Browsed, **context):
    return render_template(
        template,
        where=where,
        maybe_url=maybe_url,
        rev_query=rev_query,
        crumbs=crumbs,
        **context,
    )


# ---------------------------------------------------------------------------- views


@bp.get("/repos")
def index():
    rows = []
    for where in all_repos(hive().home):
        with open_repo(where.path) as repo:
            sha = git.head(repo)
            rows.append((where, git.commit_view(repo, sha, False) if sha else None))
    return render_template("browse_index.html", rows=rows, title="Repositories")


@dataclass(frozen=True)
class Deployed:
    agent: str
    rev: str | None
    approval: int | None
    since: int | None  # time of the meta commit that set the pin (or of its deployed tag)
    meta_commit: str | None  # None: set before the last SINCE_SEARCH meta commits


def deployed_tag_time(home: Home, name: str, approval: int) -> int | None:
    """When `deployed/<approval>` was tagged: the same deploy, just before its meta commit."""
    try:
        with open_repo(home.applied_dir(name)) as repo:
            tag = repo[repo.refs[f"refs/tags/deployed/{int(approval)}".encode()]]
    except (KeyError, ValueError, TypeError, HiveError):
        return None
    return getattr(tag, "tag_time", None)


def deployed_now(home: Home, repo: Repo, head: bytes) -> list[Deployed]:
    """What every agent runs according to meta's main, and since when: the time of the
    newest meta commit whose trailers record exactly that pin.

    The search reads at most SINCE_SEARCH meta commits, so the deploy log stays fast on a
    long history; a pin set before that takes the time of its `deployed/<id>` tag, which the
    same deploy wrote a moment before the meta commit."""
    pins = meta.pins(home)
    wanted = {name: (str(pin.get("approval")), str(pin.get("rev"))) for name, pin in pins.items()}
    needles = {name: f"\nAgent: {name}\n".encode() for name in wanted}
    found: dict[str, tuple[str, int]] = {}
    for i, (sha, raw) in enumerate(git.walk_raw(repo, head)):
        if not needles or i >= SINCE_SEARCH:
            break
        if not any(needle in raw for needle in needles.values()):
            continue  # the common case, decided without parsing the message
        trailers = dict(git.raw_trailers(raw))
        agent = trailers.get("Agent")
        pin = (trailers.get("Approval"), trailers.get("Revision"))
        if agent in needles and pin == wanted[agent]:
            found[agent] = (sha.decode(), git.commit_view(repo, sha, False).commit_time)
            del needles[agent]
    rows = []
    for name in sorted(set(pins) | set(home.agent_names())):
        pin = pins.get(name)
        sha, since = found.get(name, (None, None))
        if pin and pin.get("time"):
            since = pin["time"]  # recorded with the pin since pins carry their time
        elif pin and since is None:
            since = deployed_tag_time(home, name, pin.get("approval"))
        rows.append(
            Deployed(
                agent=name,
                rev=pin.get("rev") if pin else None,
                approval=pin.get("approval") if pin else None,
                since=since,
                meta_commit=sha,
            )
        )
    return rows


def cursor_arg() -> list[bytes] | None:
    """`after=SHA[,SHA…]`: where the previous log page's walk stopped (see `log_page`)."""
    raw = request.args.get("after")
    if raw is None:
        return None
    shas = raw.split(",")
    if len(shas) > git.CURSOR_MAX or not all(re.fullmatch("[0-9a-f]{40}", s) for s in shas):
        abort(400, description=f"invalid cursor {raw[:100]!r}")
    return [s.encode() for s in shas]


@bp.get("/repos/<hiverepo:repo>/log")
def log(repo: str):
    rev = rev_arg()
    page = request.args.get("page", 1, type=int)
    if page < 1:
        abort(400, description=f"invalid page {request.args.get('page')!r}")
    after = cursor_arg()
    where, r = opened(repo)
    with r:
        start = git.head(r) if rev == "HEAD" else resolve_or_404(r, where, rev)
        if after and not all(git.is_commit(r, sha) for sha in after):
            abort(400, description="invalid cursor: not commits of this repository")
        if start is None:
            return render(
                "browse_log.html",
                where,
                active="log",
                rev=rev,
                page=page,
                commits=[],
                has_more=False,
                decorations={},
                deploys=None,
                empty=True,
                title=f"{where.id}: log",
            )
        result = git.log_page(r, start, skip=(page - 1) * PER_PAGE, limit=PER_PAGE, after=after)
        deploys = None
        if where.kind == META and page == 1 and rev == "HEAD":
            deploys = deployed_now(hive().home, r, start)
        return render(
            "browse_log.html",
            where,
            active="log",
            rev=rev,
            page=page,
            start=start.decode(),
            commits=result.commits,
            has_more=result.has_more,
            cursor=",".join(sha.decode() for sha in result.cursor) if result.cursor else None,
            decorations=git.decorations(r),
            deploys=deploys,
            since_search=SINCE_SEARCH,
            empty=False,
            title=f"{where.id}: log"
            + (f" @ {rev}" if rev != "HEAD" else "")
            + (f" (page {page})" if page > 1 else ""),
        )


@bp.get("/repos/<hiverepo:repo>/commit/<path:rev>")
def commit(repo: str, rev: str):
    if not git.valid_rev(rev):
        abort(400, description=f"invalid revision {rev!r}")
    with at_rev(repo, rev) as (where, r, sha):
        view = git.commit_view(r, sha)
        parent = view.parents[0].encode() if view.parents else None
        only = request.args.get("file")
        files = diff_page(r, parent, sha, only)
        page = render(
            "browse_commit.html",
            where,
            active="log",
            rev=rev,
            c=view,
            files=files,
            only=only,
            view=request.args.get("view", "unified"),
            diff_repo=where.id,  # where _diff.html loads context and images from
            decorations=git.decorations(r).get(view.sha, []),
            title=f"{where.id}: commit {view.sha[:12]}",
        )
        return etags.page(page)


def render_at_path(
    template: str, where: Browsed, rev: str, sha: bytes, path: str, what: str, **context
):
    """A tree or blob page: `what` at `path` of `rev` (resolved to `sha`)."""
    title = f"{where.id}: {what}" + (f" @ {rev}" if rev != "HEAD" else "")
    return render(
        template, where, active="tree", rev=rev, sha=sha.decode(), path=path, title=title, **context
    )


@bp.get("/repos/<hiverepo:repo>/tree", defaults={"path": ""})
@bp.get("/repos/<hiverepo:repo>/tree/<path:path>")
def tree(repo: str, path: str):
    rev = rev_arg()
    path_or_404(path)
    with at_rev(repo, rev) as (where, r, sha):
        try:
            entries = git.list_tree(r, sha, path)
        except git.UnknownPath as e:
            try:
                git.read_blob(r, sha, path)
            except git.UnknownPath:
                abort(404, description=f"{where.id} @ {rev}: {e}")
            return redirect(flask_url_for("browse.blob", repo=repo, path=path, **rev_query(rev)))
        return render_at_path(
            "browse_tree.html", where, rev, sha, path, f"tree /{path}", entries=entries
        )


def _blob(repo: str, path: str):
    rev = rev_arg()
    if not path_or_404(path):
        abort(404, description="no file named")
    with at_rev(repo, rev) as (where, r, sha):
        try:
            return where, rev, sha, git.read_blob(r, sha, path)
        except git.UnknownPath as e:
            abort(404, description=f"{where.id} @ {rev}: {e}")


@bp.get("/repos/<hiverepo:repo>/blob/<path:path>")
def blob(repo: str, path: str):
    where, rev, sha, b = _blob(repo, path)
    inline = not b.is_binary and b.size <= INLINE_MAX
    body = plain_reason = None
    if inline and not b.is_symlink:
        text = b.data.decode("utf-8", errors="replace")
        body, plain_reason = blobview.render(path, b.sha.encode(), text)
    page = render_at_path(
        "browse_blob.html",
        where,
        rev,
        sha,
        path,
        path,
        blob=b,
        inline=inline,
        body=body,
        plain_reason=plain_reason,
        link_target=b.data.decode(errors="replace") if b.is_symlink else None,
    )
    return etags.page(page)


@bp.get("/repos/<hiverepo:repo>/raw/<path:path>")
def raw(repo: str, path: str):
    _, _, _, b = _blob(repo, path)
    return Response(
        b.data,
        content_type="text/plain; charset=utf-8",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@bp.get("/repos/<path:anything>")
def unknown(anything: str):
    abort(
        404,
        description=f"no such page /repos/{anything}: repositories are meta, NAME/config and "
        "NAME/applied; views are log, commit, tree, blob, raw and tags",
    )


GROUPS = [str(s) for s in ORDER] + ["other"]


@bp.get("/repos/<hiverepo:repo>/tags")
def tags(repo: str):
    where, r = opened(repo)
    with r:
        grouped: dict[str, list[git.TagView]] = {g: [] for g in GROUPS}
        for tag in git.tags(r):
            state = tag.group if tag.group in grouped and tag.approval_id is not None else "other"
            grouped[state].append(tag)
        return render(
            "browse_tags.html",
            where,
            active="tags",
            rev="HEAD",
            groups=[(g, grouped[g]) for g in GROUPS],
            count=sum(len(v) for v in grouped.values()),
            title=f"{where.id}: tags",
        )
