"""Review comments stored in git (workflow/comments.py), their delivery to the manager,
the manager's replies (the `review_reply` op) and follow-up proposals (`Follows:`)."""

import json

import pytest
from support.hive import commit_config, fresh_commit, git, run_cli

from hyperhive.broker.messages import Broker
from hyperhive.daemon.ops import Ops
from hyperhive.errors import BadInput, HiveError, UnknownApproval
from hyperhive.hive import Hive
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approvals, follows_id
from hyperhive.workflow.comments import Anchor, Links

CODE = (
    "{ pkgs, ... }:\n{\n  services.nginx.enable = true;\n  networking.firewall.enable = false;\n}\n"
)
LINKS = Links("http://forge.test/review/manager/2")


@pytest.fixture
def proposal(home):
    """manager#2: agent.nix rewritten, a binary file added; no hook (no deploys)."""
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    commit_config(home, "manager", {"agent.nix": CODE}, "nginx on, firewall off")
    config = home.config_dir("manager")
    (config / "logo.bin").write_bytes(b"\0\1\2binary")
    git(config, "add", "-A")
    git(config, "-c", "user.name=m", "-c", "user.email=m@h", "commit", "-qm", "logo")
    return Approvals(home, "manager").propose("HEAD", "manager", "try nginx")


def line(a, n: int, path: str = "agent.nix", side: str = "new") -> Anchor:
    return Anchor(path, side, n, a.commit)


def test_comments_and_replies_are_a_commit_chain_git_reads(home, proposal):
    a = proposal
    first = comments.add(home, "manager", 2, "alice", "Why is the firewall off?", line(a, 4))
    on_file = comments.add(
        home, "manager", 2, "alice", "one file", Anchor("agent.nix", "new", None, a.commit)
    )
    whole = comments.add(home, "manager", 2, "operator", "Looks fine\n\nbut:  see 1 ")
    reply = comments.add(home, "manager", 2, "manager", "It blocks port 80.", reply_to=1)
    again = comments.add(home, "manager", 2, "alice", "Then open just 80.", reply_to=4)

    assert first.anchor.quote == "  networking.firewall.enable = false;"  # read from git
    assert on_file.anchor.line is None and whole.anchor.path is None
    assert whole.text == "Looks fine\n\nbut:  see 1"  # trailing blanks gone, the rest kept
    assert (reply.anchor, again.anchor) == (first.anchor, first.anchor)  # the thread's
    review = comments.read(home, "manager", 2)
    assert [(c.number, len(r)) for c, r in review.threads()] == [(1, 2), (2, 0), (3, 0)]
    assert [c.number for c in review.unsent()] == [1, 2, 3, 5]  # not the manager's

    applied = home.applied_dir("manager")
    ref = "refs/hyperhive/review/2"
    assert git(applied, "rev-list", "--count", ref).strip() == "5"
    log = git(applied, "log", "--reverse", "--format=%an|%s|%(trailers:key=Comment,valueonly)", ref)
    assert log.split("\n")[0] == "alice|comment 1 on manager#2: agent.nix line 4 (new)|1"
    assert "manager|reply 4 to comment 1 on manager#2|4" in log
    body = git(applied, "log", "-1", "--format=%B", f"{ref}~4")
    assert "Why is the firewall off?" in body and f"Commit: {a.commit}" in body
    assert 'Quote: "  networking.firewall.enable = false;"' in body
    assert git(applied, "ls-tree", ref) == ""  # the empty tree: a record, not a tree
    # the review ref survives what retention deletes (tags only)
    assert ref in git(applied, "for-each-ref", "--format=%(refname)", "refs/hyperhive/")


BAD_ANCHORS = [
    (Anchor("agent.nix", "new", 6, "HEAD"), "has 5 lines, not 6"),
    (Anchor("agent.nix", "new", 0, "HEAD"), "a line number is 1 or more"),
    (Anchor("nope.nix", "new", 1, "HEAD"), "no file 'nope.nix'"),
    (Anchor("logo.bin", "new", 1, "HEAD"), "is binary: comment on the file"),
    (Anchor("agent.nix", "middle", 1, "HEAD"), "side is old or new"),
    (Anchor("agent.nix", "new", 1, "0" * 40), "must be one this review shows"),
    (Anchor(None, "new", 3, None), "a line comment needs the file's path"),
]


def test_an_anchor_must_be_a_line_the_review_shows(home, proposal):
    for anchor, error in BAD_ANCHORS:
        if anchor.commit == "HEAD":
            anchor = Anchor(anchor.path, anchor.side, anchor.line, proposal.commit)
        with pytest.raises(BadInput, match=error):
            comments.add(home, "manager", 2, "alice", "x", anchor)
    assert comments.read(home, "manager", 2).comments == []


def test_limits_on_text_count_and_who_starts_a_thread(home, proposal, monkeypatch):
    add = comments.add
    with pytest.raises(BadInput, match="at most 4000 characters \\(this one has 4001\\)"):
        add(home, "manager", 2, "alice", "x" * 4001)
    add(home, "manager", 2, "alice", "x" * 4000)  # exactly the limit is taken
    for bad, error in [("  \n ", "needs a text"), ("a\x00b", "control"), (3, "a string")]:
        with pytest.raises(BadInput, match=error):
            add(home, "manager", 2, "alice", bad)
    with pytest.raises(BadInput, match="the manager replies"):
        add(home, "manager", 2, "manager", "I start a thread")
    with pytest.raises(BadInput, match="has no comment 9"):
        add(home, "manager", 2, "manager", "hm", reply_to=9)
    with pytest.raises(UnknownApproval):
        add(home, "manager", 7, "alice", "no such approval")
    monkeypatch.setattr(comments, "MAX_ENTRIES", 3)
    add(home, "manager", 2, "alice", "two")
    add(home, "manager", 2, "manager", "three", reply_to=1)
    with pytest.raises(BadInput, match="manager#2 has 3 comments, the most an approval takes"):
        add(home, "manager", 2, "alice", "four")
    assert len(comments.read(home, "manager", 2).comments) == 3


def test_send_delivers_one_structured_message_and_records_it(home, proposal):
    broker = Broker(home)
    assert comments.send(home, broker, "manager", 2, "alice", LINKS) is None  # nothing yet
    comments.add(home, "manager", 2, "alice", "Why is the firewall off?", line(proposal, 4))
    comments.add(home, "manager", 2, "alice", "And the whole thing?")

    sent = comments.send(home, broker, "manager", 2, "alice", LINKS)

    (m,) = broker.recv("manager")
    assert sent.comments == (1, 2) and sent.message == m["id"] and not sent.denied
    body = m["body"]
    assert m["from"] == "operator" and body.startswith("review_comments: manager#2\n")
    assert "review: http://forge.test/review/manager/2\n" in body
    assert (
        f"--- comment 1 by alice: agent.nix line 4 (new) at {proposal.commit[:12]}\n"
        ">   networking.firewall.enable = false;\nWhy is the firewall off?\n"
        "link: http://forge.test/review/manager/2#comment-1"
    ) in body
    assert "--- comment 2 by alice: the whole change\nAnd the whole thing?" in body
    assert 'review_reply(approval="manager#2", comment=N' in body and "follows=2" in body
    review = comments.read(home, "manager", 2)
    assert review.unsent() == [] and [c.sent for c in review.comments] == [1, 1]
    trailers = git(home.applied_dir("manager"), "log", "-1", "--format=%B", review.tip)
    assert f"Kind: sent\nSent: 1 2\nActor: alice\nMessage: {m['id']}" in trailers

    # a reply of the manager is not sent back; the operator's answer to it is
    comments.add(home, "manager", 2, "manager", "Port 80 only.", reply_to=1)
    comments.add(home, "manager", 2, "alice", "OK, deny: do that.", reply_to=3)
    denied = comments.send(home, broker, "manager", 2, "alice", LINKS, denied="do port 80")
    (m,) = broker.recv("manager")
    assert denied.comments == (4,) and denied.denied
    assert "denied by alice: do port 80" in m["body"]
    assert "--- comment 4 by alice: agent.nix line 4 (new)" in m["body"]
    assert "reply to comment 3 (thread of comment 1)" in m["body"]


def test_a_message_past_the_size_limit_carries_what_fits_and_the_rest_waits(home, proposal):
    for i in range(3):
        comments.add(home, "manager", 2, "alice", f"{i} " + "y" * 3000)
    review = comments.read(home, "manager", 2)
    text, carried = comments.render_message(
        review, proposal, review.unsent(), LINKS, "alice", limit=5000
    )
    assert [c.number for c in carried] == [1] and len(text.encode()) <= 5000
    assert text.endswith("(2 more comments did not fit in this message: " + LINKS.review + ")")
    # A real send with the broker's 64 KiB: 17 comments of 4000 characters do not fit
    for _ in range(14):
        comments.add(home, "manager", 2, "alice", "z" * 4000)
    broker = Broker(home)
    first = comments.send(home, broker, "manager", 2, "alice", LINKS)
    assert 0 < len(first.comments) < 17
    second = comments.send(home, broker, "manager", 2, "alice", LINKS)
    assert set(first.comments) | set(second.comments) == set(range(1, 18))
    assert comments.read(home, "manager", 2).unsent() == []


def test_review_reply_is_the_managers_only(home, proposal, runtime):
    comments.add(home, "manager", 2, "alice", "Why?", line(proposal, 3))
    broker = Broker(home)
    ops = Ops(Hive(home, runtime), broker, None)
    reply = ops.for_agent("manager")(
        {"op": "review_reply", "approval": "manager#2", "comment": 1, "text": "Because."}
    )
    assert reply == {"approval": "manager#2", "comment": 2}
    (c1, c2) = comments.read(home, "manager", 2).comments
    assert (c2.actor, c2.reply_to, c2.text, c2.anchor) == ("manager", 1, "Because.", c1.anchor)
    (told,) = broker.recv("operator")  # the dashboard's inbox shows the answer
    assert told["from"] == "manager" and told["body"] == (
        "review_reply: manager#2\ncomment 2, a reply to comment 1 on agent.nix line 3 (new)"
        "\n\nBecause."
    )
    with pytest.raises(BadInput, match="comment must be a comment's number"):
        ops.for_agent("manager")({"op": "review_reply", "approval": "manager#2", "text": "x"})
    run_cli(home.root, "agent", "create", "alice", check=True)
    with pytest.raises(HiveError, match="review_reply is manager-only"):
        ops.for_agent("alice")(
            {"op": "review_reply", "approval": "manager#2", "comment": 1, "text": "me too"}
        )


def test_a_proposal_follows_an_earlier_one(home, proposal, runtime):
    commit_config(home, "manager", {"agent.nix": CODE.replace("false", "true")}, "firewall on")
    proc = run_cli(home.root, "propose", "manager", "--follows", "manager#2", check=True)
    assert proc.stdout.strip() == "manager#3"
    a = Approvals(home, "manager").get(3)
    assert a.follows == 2 and a.states["proposal"].trailers["Follows"] == "manager#2"
    tag = git(home.applied_dir("manager"), "cat-file", "-p", "proposal/3")
    assert "Follows: manager#2" in tag
    # the manager's tool: request_apply_commit with follows (something new: the same tree
    # again would be "no new changes")
    ops = Ops(Hive(home, runtime), Broker(home), None)
    reply = ops.for_agent("manager")(
        {
            "op": "request_apply_commit",
            "name": "manager",
            "commit": fresh_commit(home, "manager"),
            "follows": "#3",
        }
    )
    assert reply == {"approval": "manager#4"}
    assert Approvals(home, "manager").get(4).follows == 3
    bad = run_cli(home.root, "propose", "manager", "--follows", "manager#99")
    assert bad.returncode == 1 and "unknown approval manager#99" in bad.stderr
    assert Approvals(home, "manager").states().keys() == {1, 2, 3, 4}


@pytest.mark.parametrize(
    "value, expected",
    [("manager#3", 3), ("#3", 3), ("3", 3), (3, 3), (None, None), ("", None)],
)
def test_follows_id_reads_a_target_or_an_id(value, expected):
    assert follows_id("manager", value) == expected


@pytest.mark.parametrize("value", ["alice#3", "three", "0", "#", True, [3], "1" * 30])
def test_follows_id_refuses_anything_else(value):
    with pytest.raises(BadInput):
        follows_id("manager", value)


def test_review_json_is_what_the_api_returns(home, proposal):
    comments.add(home, "manager", 2, "alice", "hm", line(proposal, 1))
    data = json.loads(json.dumps(comments.read(home, "manager", 2).to_json()))
    assert data["ref"] == "refs/hyperhive/review/2" and data["deliveries"] == []
    (c,) = data["comments"]
    assert (c["path"], c["line"], c["quote"], c["sent"]) == ("agent.nix", 1, "{ pkgs, ... }:", None)
