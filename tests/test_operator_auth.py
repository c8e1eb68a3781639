"""Operator accounts, forge sessions and login throttling: the forge through Flask's test
client, the CLI as a real subprocess changing what the running forge accepts (what only
reads runs the CLI's main in this process)."""

import json
import re
import sqlite3
import stat
import threading
import time

import pytest
from support.hive import csrf, fresh_commit, git, run_cli
from support.inprocess import run_main
from werkzeug.security import generate_password_hash

from forge_ui import create_app
from forge_ui.throttle import FORGET, LoginThrottle
from hyperhive import operator, sessions, tokens
from hyperhive.errors import BadInput
from hyperhive.hive import Hive
from hyperhive.settings import Forge
from hyperhive.workflow.approvals import Approvals

PASSWORD = "correct horse battery"
ALICE = "alice's long password"


@pytest.fixture
def app(home, runtime):
    operator.set_password(home, PASSWORD)
    return create_app(Hive(home, runtime))


def log_in(client, account="operator", password=PASSWORD, **kw):
    form = {"csrf_token": csrf(client, "/login"), "account": account, "password": password}
    return client.post("/login", data=form, **kw)


def logged_in(app, account="operator", password=PASSWORD):
    c = app.test_client()
    r = log_in(c, account, password)
    assert r.status_code == 302, r.get_data(as_text=True)
    return c


def cookie_of(client) -> str:
    return client.get_cookie("session").value


def with_cookie(app, value: str):
    c = app.test_client()
    c.set_cookie("session", value)
    return c


def approve(client, token: str, approval_id: int = 1):
    return client.post(
        f"/api/approvals/manager/{approval_id}/approve", headers={"X-CSRFToken": token}
    )


def no_hook(home, name="manager"):
    (home.applied_dir(name) / "hooks" / "post-receive").unlink()


def tag_actor(home, tag: str) -> str:
    body = git(home.applied_dir("manager"), "cat-file", "-p", tag)
    return re.search(r"^Actor: (.*)$", body, re.M).group(1)


def db(home) -> sqlite3.Connection:
    return sqlite3.connect(home.root / "hive.db", isolation_level=None)


# -- sessions end: logout, password, token, logout-all ---------------------------------


def test_a_logged_out_cookie_no_longer_works_even_for_a_post(app, home):
    no_hook(home)
    c = logged_in(app)
    token, stolen = csrf(c, "/"), cookie_of(c)  # what a thief copied while it was live
    assert c.post("/logout", data={"csrf_token": token}).status_code == 302
    replay = with_cookie(app, stolen)
    assert replay.get("/").status_code == 302  # to the login page
    r = approve(replay, token)
    assert r.status_code == 401, r.get_data(as_text=True)
    assert "refs/tags/approved/1" not in git(home.applied_dir("manager"), "tag")


def test_the_cli_ends_sessions_in_the_running_forge(app, home):
    first, second = logged_in(app), logged_in(app)
    operator.add(home, "alice", ALICE)
    alice = logged_in(app, "alice", ALICE)
    assert all(c.get("/").status_code == 200 for c in (first, second, alice))

    out = run_cli(home.root, "operator", "set-password", "--password-stdin", input="new pass 1\n")
    assert out.returncode == 0 and "2 sessions ended" in out.stdout, out.stderr
    assert first.get("/").status_code == 302 and second.get("/").status_code == 302
    assert alice.get("/").status_code == 200  # another account's sessions live on
    assert log_in(app.test_client(), password=PASSWORD).status_code == 401
    again = logged_in(app, password="new pass 1")

    out = run_cli(home.root, "operator", "token", "--rotate")
    assert out.returncode == 0, out.stderr
    assert again.get("/").status_code == 302  # a new token ends the account's sessions

    third = logged_in(app, password="new pass 1")
    out = run_cli(home.root, "operator", "logout-all", "--account", "alice")
    assert out.returncode == 0 and out.stdout.strip() == "1 session ended", out.stderr
    assert alice.get("/").status_code == 302 and third.get("/").status_code == 200
    out = run_cli(home.root, "operator", "logout-all")
    assert out.returncode == 0 and out.stdout.strip() == "1 session ended", out.stderr
    assert third.get("/").status_code == 302
    out = run_cli(home.root, "operator", "logout-all", "--account", "nobody")
    assert out.returncode == 1 and "no operator account 'nobody'" in out.stderr


def test_sessions_expire_when_idle_and_after_their_lifetime(home, runtime):
    operator.set_password(home, PASSWORD)
    (home.root / "hyperhive.toml").write_text("[forge]\nsession_hours = 2\nidle_minutes = 10\n")
    app = create_app(Hive(home, runtime))
    c = logged_in(app)
    cookie = c.get_cookie("session")
    assert cookie.max_age is None and cookie.expires is not None  # the cookie: 2 h
    assert cookie.expires.timestamp() == pytest.approx(time.time() + 2 * 3600, abs=60)

    def shift(column: str, seconds: float) -> None:
        with db(home) as conn:
            conn.execute(f"UPDATE sessions SET {column} = {column} - ?", (seconds,))

    shift("seen_at", 9 * 60)  # used 9 minutes ago: still live, and the clock restarts
    assert c.get("/").status_code == 200
    seen = db(home).execute("SELECT seen_at FROM sessions").fetchone()[0]
    assert seen == pytest.approx(time.time(), abs=30)
    shift("seen_at", 10 * 60 + 1)  # idle for over 10 minutes: over
    assert c.get("/").status_code == 302
    assert db(home).execute("SELECT count(*) FROM sessions").fetchone()[0] == 0

    c = logged_in(app)
    shift("created_at", 2 * 3600 - 60)  # busy all along, but near its 2 hours
    assert c.get("/").status_code == 200
    shift("created_at", 61)
    assert c.get("/").status_code == 302


def test_session_rows_stay_bounded_and_hold_no_usable_id(home):
    life = sessions.Lifetime.of(Forge())
    ids = [sessions.start(home, "operator", life) for _ in range(sessions.MAX_PER_ACCOUNT + 5)]
    rows = db(home).execute("SELECT digest FROM sessions").fetchall()
    assert len(rows) == sessions.MAX_PER_ACCOUNT  # the oldest went
    assert sessions.check(home, ids[0], life) is None and sessions.check(home, ids[-1], life)
    assert not {r[0] for r in rows} & set(ids)  # digests only
    expired = time.time() + life.idle + 1
    sessions.start(home, "alice", life, now=expired)  # a login clears out expired rows
    assert db(home).execute("SELECT account FROM sessions").fetchall() == [("alice",)]


# -- logins are throttled ---------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_back_off_by_address_and_by_account(app, home):
    clock = Clock()
    app.extensions["login_throttle"].clock = clock
    operator.add(home, "alice", ALICE)
    mallory = app.test_client()
    for _ in range(5):
        assert log_in(mallory, password="guess").status_code == 401
    r = log_in(mallory, password="guess")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert "too many failed logins" in r.get_data(as_text=True)
    r = log_in(mallory)  # the right password is not even checked now
    assert r.status_code == 429
    # the same account from another address waits too; another account does not
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    assert log_in(app.test_client(), environ_base=elsewhere).status_code == 429
    assert log_in(app.test_client(), "alice", ALICE, environ_base=elsewhere).status_code == 302
    # the account's token, the account left out, still logs in from elsewhere
    third = {"REMOTE_ADDR": "192.0.2.8"}
    token = operator.token(home)
    assert log_in(app.test_client(), "", token, environ_base=third).status_code == 302
    # and mallory's address is refused whatever account it names
    assert log_in(mallory, "alice", ALICE).status_code == 429

    clock.now += 1
    assert log_in(mallory, password="guess").status_code == 401  # checked again: wrong
    r = log_in(mallory)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"  # the wait doubles
    clock.now += 2
    assert log_in(mallory).status_code == 302  # the right one, once the wait is over
    assert log_in(app.test_client(), password="guess").status_code == 401  # counts reset


def test_password_checks_run_at_most_two_at_once(app):
    throttle = app.extensions["login_throttle"]
    throttle.wait_seconds = 0.05
    with throttle.checking(), throttle.checking():  # two logins are checking passwords
        r = log_in(app.test_client())
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "too many logins at once" in r.get_data(as_text=True)
        token = operator.token(app.extensions["hive"].home)
        assert log_in(app.test_client(), "", token).status_code == 302  # no scrypt: no slot
    assert log_in(app.test_client()).status_code == 302


def test_the_throttle_table_is_bounded_and_forgets():
    clock = Clock()
    t = LoginThrottle(clock=clock, max_keys=100)
    for i in range(1000):
        t.failed(LoginThrottle.keys(f"10.0.{i // 256}.{i % 256}", ""))
    assert len(t) == 100
    t.failed(LoginThrottle.keys("10.9.9.9", "operator"))
    assert len(t) == 100 and t.retry_after(["account:operator"]) == 0
    clock.now += FORGET
    assert t.retry_after(["addr:10.9.9.9"]) == 0 and len(t) == 0


# -- named operator accounts ------------------------------------------------------------


def test_accounts_from_the_cli_decide_under_their_own_name(app, home):
    no_hook(home)
    out = run_cli(home.root, "operator", "add", "alice", "--password-stdin", input=ALICE + "\n")
    assert out.returncode == 0, out.stderr
    listing = json.loads(run_main(home.root, "operator", "list", "--json", check=True).stdout)
    assert [(a["name"], a["password"]) for a in listing] == [("alice", True), ("operator", True)]

    # the account is what the tags record, not a name typed into the form
    assert log_in(app.test_client(), "mallory", PASSWORD).status_code == 401
    alice = logged_in(app, "alice", ALICE)
    assert alice.get("/").get_data(as_text=True).count(">alice</span>") == 1
    r = alice.post(
        "/review/manager/1/approve",
        data={"csrf_token": csrf(alice, "/review/manager/1"), "confirm": "yes", "force": "yes"},
    )
    assert r.status_code == 303, r.get_data(as_text=True)
    assert tag_actor(home, "approved/1") == "alice"

    # alice's bearer token speaks for alice, in the API and on the git remote
    alice_token = run_main(
        home.root, "operator", "token", "--account", "alice", check=True
    ).stdout.strip()
    assert tokens.caller(home, alice_token) == tokens.Caller("operator", "alice")
    second = Approvals(home, "manager").propose(fresh_commit(home, "manager"), "manager").id
    bearer = {"Authorization": f"Bearer {alice_token}"}
    r = app.test_client().post(
        f"/api/approvals/manager/{second}/deny", json={"reason": "no"}, headers=bearer
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    assert tag_actor(home, f"denied/{second}") == "alice"
    r = app.test_client().get(
        "/git/manager/config.git/info/refs?service=git-receive-pack", headers=bearer
    )
    assert r.status_code == 200

    # removing alice ends her session and her token
    out = run_cli(home.root, "operator", "remove", "alice")
    assert out.returncode == 0 and "1 session ended" in out.stdout, out.stderr
    assert alice.get("/").status_code == 302
    assert app.test_client().get("/api/state", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "manager"], "names an agent or the system"),
        (["add", "operator"], "exists already"),
        (["add", "Bad_Name"], "invalid account name"),
        (["remove", "operator"], "only operator account"),
        (["remove", "ghost"], "no operator account 'ghost'"),
        (["set-password", "--account", "ghost", "--password-stdin"], "no operator account"),
        (["add", "bob", "--password-stdin"], "at least 8 characters"),
    ],
)
def test_account_commands_refuse_clearly(home, args, message):
    # the CLI's own main, in this process (its umask and logging put back after): these
    # refusals come before any work
    proc = run_main(home.root, "operator", *args, input="short\n")
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr


def test_an_old_operator_json_becomes_the_operator_account(home, runtime):
    old = {
        "password": generate_password_hash(PASSWORD, method="scrypt"),
        "token": "an-old-token-from-before-accounts",
        "session_key": "an-old-session-key",
    }
    path = home.root / "operator.json"
    path.write_text(json.dumps(old))
    path.chmod(0o600)
    app = create_app(Hive(home, runtime))  # the daemon reads it first
    assert app.config["SECRET_KEY"] == "an-old-session-key"
    new = json.loads(path.read_text())
    assert new["version"] == 2 and new["session_key"] == old["session_key"]
    assert new["accounts"]["operator"]["password"] == old["password"]
    assert new["accounts"]["operator"]["token"] == old["token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert logged_in(app).get("/").status_code == 200
    bearer = {"Authorization": f"Bearer {old['token']}"}
    assert app.test_client().get("/api/state", headers=bearer).status_code == 200
    out = run_main(home.root, "operator", "token", check=True)
    assert out.stdout.strip() == old["token"]


def test_concurrent_account_changes_are_all_kept(home):
    names = [f"op{i}" for i in range(8)]
    threads = [threading.Thread(target=operator.add, args=(home, n)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {a["name"] for a in operator.accounts(home)} == {"operator", *names}
    with pytest.raises(BadInput, match="at least 8"):
        operator.add(home, "short", "short")


# -- HTTPS: the cookie is Secure ---------------------------------------------------------


def test_the_cookie_is_secure_over_https_only(app):
    plain = log_in(app.test_client())
    assert "Secure" not in plain.headers["Set-Cookie"]
    c = app.test_client()
    https = {"base_url": "https://localhost", "headers": {"Referer": "https://localhost/login"}}
    form = {"csrf_token": csrf(c, "/login"), "account": "operator", "password": PASSWORD}
    r = c.post("/login", data=form, **https)
    assert r.status_code == 302 and "; Secure" in r.headers["Set-Cookie"]


def test_behind_a_proxy_the_forwarded_client_is_who_is_throttled(home, runtime):
    operator.set_password(home, PASSWORD)
    (home.root / "hyperhive.toml").write_text("[forge]\nproxy_hops = 1\n")
    app = create_app(Hive(home, runtime))

    def via_proxy(client_address: str) -> dict:
        return {
            "headers": {
                "X-Forwarded-For": client_address,
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "hive.example",
                "Referer": "https://hive.example/login",
            }
        }

    guesser = app.test_client()
    for _ in range(5):
        assert log_in(guesser, password="guess", **via_proxy("203.0.113.9")).status_code == 401
    assert log_in(guesser, **via_proxy("203.0.113.9")).status_code == 429
    r = log_in(app.test_client(), "", operator.token(home), **via_proxy("198.51.100.4"))
    assert r.status_code == 302 and "; Secure" in r.headers["Set-Cookie"]
