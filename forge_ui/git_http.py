"""The git remote: smart HTTP (protocol v0) served by dulwich's server side, mounted at
`/git/` in front of the Flask app, so the stock `git` client clones, fetches and pushes.

    /git/<name>/config.git    the agent's proposed config repo: fetch; push (manager, operator)
    /git/<name>/applied.git   its applied repo: fetch only
    /git/meta.git             the meta repo: fetch only

Every request needs a token (forge_ui.auth.git_identity): the operator's, or an agent's
from `hyperhive token issue`. The manager and the operator read every repo and push to
config repos; an agent reads its own config and applied repos. A push is refused with
403 before any byte of it is read when the token may not push or the repo is read-only
(applied and meta repos change only through the workflow); what a push to a config repo
may do is hyperhive.workflow.push, enforced while receiving (hyperhive.gitstore.receive).

It is plain WSGI, not a Flask view, because dulwich writes its responses through the WSGI
`write` callable: under gunicorn a clone streams instead of being held in memory.
"""

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

from dulwich.errors import GitProtocolError
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import GunzipFilter, HTTPGitApplication, LimitedInputFilter
from werkzeug.wsgi import ClosingIterator, get_host

from forge_ui.auth import git_identity
from hyperhive.agents import MANAGER
from hyperhive.errors import HiveError
from hyperhive.gitstore.receive import Limits, QuarantinedReceivePack
from hyperhive.hive import Hive
from hyperhive.names import AGENT_NAME_RE
from hyperhive.settings import load_settings
from hyperhive.tokens import OPERATOR
from hyperhive.workflow.approvals import Approval
from hyperhive.workflow.push import ConfigPush

PREFIX = "/git/"
ROUTE = re.compile(
    r"/git/(?:(?P<name>[^/]+)/(?P<kind>config|applied)|(?P<meta>meta))\.git(?P<rest>/.*)"
)
PUSHERS = {OPERATOR, MANAGER}
REQUEST_SLACK = 1024 * 1024  # a push's ref commands beside its pack


@dataclass(frozen=True)
class Target:
    """The repo a request is for, and who asks."""

    who: str  # the role: `operator` or an agent's name
    actor: str  # whom the tags name: the operator account or the agent
    kind: str  # config, applied or meta
    name: str | None  # the agent; None for meta
    path: Path
    cut: int  # where the repo's part of PATH_INFO ends


class Refusal(Exception):
    def __init__(self, status: str, message: str, headers: list | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


def pushing(rest: str, query: str) -> bool:
    service = parse_qs(query).get("service", [""])[0]
    return rest == "/git-receive-pack" or (rest == "/info/refs" and service == "git-receive-pack")


class GitMount:
    """WSGI middleware: `/git/…` goes to the git remote, everything else to `app`."""

    def __init__(self, app, hive: Hive):
        self.app = app
        self.hive = hive

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(PREFIX):
            if self.hive.forwarded(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")):
                return self.refuse(
                    Refusal("403 Forbidden", "an agent's git socket serves the git remote only"),
                    start_response,
                )
            return self.app(environ, start_response)
        try:
            target = self.resolve(environ)
            limits = self.limits()
        except Refusal as r:
            return self.refuse(r, start_response)
        return self.serve(environ, start_response, target, limits)

    @staticmethod
    def refuse(r: "Refusal", start_response) -> list[bytes]:
        # git prints the body of a failed request as `remote:` lines
        body = (r.message + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        start_response(r.status, headers + [("Content-Length", str(len(body)))] + r.headers)
        return [body]

    def limits(self) -> Limits:
        try:  # read at each request: an edit of hyperhive.toml applies at once
            git = load_settings(self.hive.home).git
        except HiveError as e:
            raise Refusal("500 Internal Server Error", str(e)) from None
        return Limits(git.max_push_bytes, git.max_object_bytes, git.max_push_inflated_bytes)

    def resolve(self, environ) -> Target:
        """The repo asked for, once the token may do what the request does with it."""
        home = self.hive.home
        caller = git_identity(home, environ)
        if caller is None:
            raise Refusal(
                "401 Unauthorized",
                "this token is unknown or revoked"
                if "HTTP_AUTHORIZATION" in environ
                else "a token is needed: an operator's (`hyperhive operator token`) or an "
                "agent's (`hyperhive token issue NAME`), as the password",
                [("WWW-Authenticate", 'Basic realm="hyperhive git"')],
            )
        who = caller.role
        match = ROUTE.fullmatch(environ["PATH_INFO"])
        if not match or (match["name"] and not AGENT_NAME_RE.fullmatch(match["name"])):
            raise Refusal("404 Not Found", "no such repo: the README lists the /git/ paths")
        name, kind = match["name"], match["kind"] or "meta"
        label = f"{name}/{kind}.git" if name else "meta.git"
        if kind == "config":
            path, exists = home.config_dir(name), (home.config_dir(name) / ".git").is_dir()
        else:
            path = home.applied_dir(name) if name else home.meta_dir
            exists = (path / "HEAD").is_file()
        if not exists:
            raise Refusal("404 Not Found", f"no repo {label}")
        if who not in PUSHERS and not (name == who and kind != "meta"):
            raise Refusal("403 Forbidden", f"{who}'s token cannot read {label}")
        if pushing(match["rest"], environ.get("QUERY_STRING", "")):
            if kind != "config":
                raise Refusal(
                    "403 Forbidden",
                    f"{label} is read-only: it changes only through the workflow; push to "
                    f"{name or 'NAME'}/config.git (refs/for/main makes a proposal)",
                )
            if who not in PUSHERS:
                raise Refusal(
                    "403 Forbidden",
                    f"{who}'s token cannot push: only the manager and the operator push",
                )
        return Target(who, caller.actor, kind, name, path, match.start("rest"))

    def serve(self, environ, start_response, target: Target, limits: Limits):
        home = self.hive.home
        path = environ["PATH_INFO"]
        script = environ.get("SCRIPT_NAME", "")
        inner = dict(environ, SCRIPT_NAME=script + path[: target.cut], PATH_INFO=path[target.cut :])
        if inner.get("wsgi.input_terminated"):
            # the server (gunicorn) has already undone chunked encoding: dulwich must not again
            inner.pop("HTTP_TRANSFER_ENCODING", None)
        receive = None  # applied and meta repos never receive (and were refused above)
        if target.kind == "config":
            base = f"{environ.get('wsgi.url_scheme', 'http')}://{get_host(environ)}{script}"

            def review(a: Approval) -> str:
                return f"{base}/review/{a.agent}/{a.id}"

            rules = ConfigPush(home, target.name, target.actor, review)
            receive = partial(QuarantinedReceivePack, rules=rules, limits=limits)
        repo = Repo(str(target.path))
        app = HTTPGitApplication(DictBackend({"/": repo}), handlers={b"git-receive-pack": receive})
        # the limit inside the unzipping (not dulwich's order): it bounds what a gzipped
        # body unzips to, which is what dulwich reads and keeps
        cap = limits.pack_bytes + REQUEST_SLACK
        chain = GunzipFilter(LimitedInputFilter(app, max_request_size=cap))
        try:
            answer = protocol_errors(chain, inner, start_response)
        except BaseException:
            repo.close()  # no iterator to close it after the answer
            raise
        return ClosingIterator(answer, [repo.close])


def protocol_errors(app, environ, start_response):
    """`app`'s answer, but a request that is not git's protocol (a malformed pkt-line)
    is a 400 saying so, not a 500 with a traceback: `app`'s status and headers are held
    back until its first byte, so until then the answer can still change."""
    held: list = []  # the status and headers app gave, not yet passed on
    write = None

    def release() -> None:
        nonlocal write
        if write is None and held:
            write = start_response(*held)

    def deferred_start_response(status, headers, exc_info=None):
        held[:] = [status, headers, exc_info]

        def deferred_write(data: bytes):
            release()
            return write(data)

        return deferred_write

    try:
        for chunk in app(environ, deferred_start_response):
            release()
            yield chunk
        release()
    except GitProtocolError as e:
        if write is not None:
            raise
        body = f"not git's smart HTTP protocol: {e}\n".encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        start_response("400 Bad Request", headers)
        yield body
