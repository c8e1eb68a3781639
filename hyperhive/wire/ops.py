"""The one table of operations: every request a socket takes, by name, with who may make
it, its arguments and what it does. From this table the daemon dispatches
(hyperhive/daemon/ops.py: one `op_<name>` handler each), `hyperhive mcp` builds the
agents' MCP tools (hyperhive/mcp/tools.py: name, description, typed arguments) and the
harness its `--allowedTools` (hyperhive/harness/claude_config.py).

Who may call an op is where its request arrives: an agent's socket speaks for that agent
(`agent`, or `manager` for the manager's), `run/host.sock` for the operator (`host`). An
op with `tool=True` is an MCP tool: the model sees its description and arguments, and
`whoami` lists it; the others are the harness's (any process on the agent's socket may
call them; a forged one only touches the agent's own telemetry or messages: an early ack
is a plain recv's delivery, a stray release a repeat, a stray give_up a dead letter the
operator can requeue) or the host's.

To add an operation: one `Op` row here and one `op_<name>(caller, request)` method on
daemon/ops.py's `Ops`; the MCP tool, the allow-list, `whoami` and the tests follow.
"""

from dataclasses import dataclass

AGENT, MANAGER, HOST = "agent", "manager", "host"
ROLES = (AGENT, MANAGER, HOST)

MAX_WAIT = 180.0  # the longest a recv waits for a message; longer waits are capped
NAME_RULE = "lowercase letters, digits and '-', starting with a letter, at most 31 characters"


@dataclass(frozen=True)
class Arg:
    """One argument: its JSON value's Python type (an MCP tool's input schema), what it
    means, whether it may be left out (then null), and whether the model sees it."""

    name: str
    type: object
    description: str
    required: bool = True
    tool: bool = True  # False: the harness's flag, not offered to the model


@dataclass(frozen=True)
class Op:
    name: str
    callers: frozenset[str]
    description: str  # for the model when `tool`; what it does either way
    args: tuple[Arg, ...] = ()
    tool: bool = True  # an MCP tool of its callers (AGENT, MANAGER)
    read_only: bool = False  # a tool that changes nothing (its MCP annotation)
    waits: str | None = None  # the argument with a long-poll's seconds, if any


AGENTS = frozenset({AGENT, MANAGER})
MANAGER_ONLY = frozenset({MANAGER})
HOST_ONLY = frozenset({HOST})
NAME = Arg("name", str, f"the agent's name: {NAME_RULE}")

TABLE = (
    # -- the agents' tools ----------------------------------------------------------------
    Op(
        "send",
        AGENTS,
        "Send a text message to another agent, the manager, or the human operator. "
        "`to` is one recipient name: `operator` is the human's dashboard inbox (they read it "
        "there and may reply with a message to you); `manager` is the manager agent; any "
        "other name is an agent (`list_peers` shows who exists). Your deployed policy may "
        "restrict whom you may message (`whoami` shows `policy.allowedRecipients`: null "
        "means anyone); the manager may message anyone. A refused or unknown recipient "
        "returns an error that says why; nothing is sent then. Messages from one sender "
        "arrive in the order sent. The recipient reads it with `recv`. "
        'Returns {"id": <message id>}.',
        args=(
            Arg("to", str, "recipient: an agent's name, `manager` or `operator`"),
            Arg("body", str, "the message text"),
        ),
    ),
    Op(
        "recv",
        AGENTS,
        "Read the messages waiting in your inbox: from agents, the manager, or the "
        "operator (including the operator's answers to your questions). With no argument "
        "(or wait_seconds 0) it looks now and returns at once, with an empty list if "
        "nothing is there. With a positive wait_seconds it waits up to that many seconds "
        f"(at most {MAX_WAIT:.0f}; larger values are capped) and returns as soon as a "
        "message arrives: use that when you have nothing else to do until a reply comes; "
        "call it again after an empty result to keep waiting. Each message is returned "
        "once and then leaves the inbox, so act on it or note it. "
        'Returns {"messages": [{"id", "from", "to", "body", "time"}]}, oldest first '
        "(time: unix seconds).",
        args=(
            Arg(
                "wait_seconds",
                float | None,
                "omit (or 0) to look now and return at once; a positive number waits up "
                f"to that many seconds (at most {MAX_WAIT:.0f}) for a message",
                required=False,
            ),
            Arg(
                "lease",
                bool,
                "the harness's recv: the messages stay leased until `ack`ed (or `release`d)",
                required=False,
                tool=False,
            ),
        ),
        waits="wait_seconds",
    ),
    Op(
        "whoami",
        AGENTS,
        "Who you are in the hive: your agent name, your role (`agent` or `manager`), your "
        "deployed policy (`allowedRecipients`: null means you may message anyone, otherwise "
        "the names you may send to) and the tools you may use. "
        'Returns {"name", "role", "policy", "tools"}.',
        read_only=True,
    ),
    Op(
        "list_peers",
        AGENTS,
        "List who you can address with `send`: every other agent with its role and its "
        "state (running, failing: its turns fail, crash-looping, stopped, …), and "
        "`operator`, the human. "
        "Your policy may still restrict whom you may message (see `whoami`). "
        'Returns {"peers": [{"name", "role", "state"}]}.',
        read_only=True,
    ),
    # -- the manager's tools --------------------------------------------------------------
    Op(
        "ask_operator",
        MANAGER_ONLY,
        "Ask the human operator a question that needs their decision or knowledge. It "
        "returns at once with the question's id and does not wait for the answer: the "
        "question shows on the operator's dashboard, and their answer arrives later in "
        "your inbox as a message from `operator` (read it with `recv`; "
        "recv(wait_seconds=180) if you cannot go on without it). `options` is an optional "
        "list of suggested answers, shown as choices. To inform the operator without "
        "asking anything, use send(to='operator') instead. "
        'Returns {"id": <question id>}.',
        args=(
            Arg("question", str, "the question, self-contained"),
            Arg(
                "options",
                list[str] | None,
                "optional suggested answers, shown as choices",
                required=False,
            ),
        ),
    ),
    Op(
        "request_init_config",
        MANAGER_ONLY,
        "Make sure agent `name` has a config repo and get its git remote: for a name that "
        "has no agent yet, it first creates a draft from the default template (as "
        "request_spawn_draft does). The repo is not a path you can open: clone "
        "`$HYPERHIVE_GIT_URL/<remote>` with your token ($HYPERHIVE_TOKEN_FILE), commit, "
        "and push (see your instructions' Git section). Nothing is deployed and no approval "
        "is created: submit a commit with request_apply_commit (an existing agent) or "
        "request_spawn_commit (a draft). "
        'Returns {"name", "remote": "<name>/config.git"}.',
        args=(NAME,),
    ),
    Op(
        "request_apply_commit",
        MANAGER_ONLY,
        "Submit a commit of agent `name`'s config repo for the operator's approval (commit: "
        "a sha or ref in agents/<name>/config, such as HEAD after you commit). An ancestor "
        "of the deployed commit (an earlier deploy) rolls back: set rollback=true to say "
        "you mean it. A commit whose tree is the deployed one's or a pending proposal's is "
        'refused ("no new changes"). This creates an approval NAME#ID that the operator '
        "must approve; nothing is deployed until then. Once approved, the agent's container "
        "is rebuilt from that commit. The operator may deny it with a reason: "
        "`agent_history` shows it, and a failed build's log tail. When the commit answers "
        "an earlier approval (its review comments, its denial), give `follows` as that "
        "NAME#ID: the operator then sees what changed since it. "
        'Returns {"approval": "NAME#ID"}.',
        args=(
            NAME,
            Arg("commit", str, "a commit sha or ref of its config repo"),
            Arg(
                "rollback",
                bool,
                "true: the commit is an earlier one, going back is meant",
                required=False,
            ),
            Arg(
                "follows",
                str | None,
                "optional: the NAME#ID this proposal answers (its comments)",
                required=False,
            ),
        ),
    ),
    Op(
        "request_spawn",
        MANAGER_ONLY,
        "Create a new agent `name` from the default template in one step: creates its "
        "config repo and state and submits the template's first commit for approval. This "
        "creates an approval NAME#ID that the operator must approve; no container exists "
        "until then, and the approved deploy creates and starts it. To edit the new "
        "agent's config first, use request_spawn_draft instead. "
        f"Names: {NAME_RULE}. "
        'Returns {"approval": "NAME#ID"}.',
        args=(NAME,),
    ),
    Op(
        "request_spawn_draft",
        MANAGER_ONLY,
        "Start a new agent `name` as a draft: creates its config repo (a first commit from "
        "the default template) and an empty state directory, with no container and no "
        "approval. Its config is reached like any agent's, over the git remote: clone "
        "`$HYPERHIVE_GIT_URL/<remote>` with your token, edit agent.nix, commit and push to "
        "its main (a draft takes no refs/for/main). Its initial state (the notes.md and "
        "files the agent finds in /state when it starts) is written with "
        "draft_write_state(name, path, content); no host path is reachable from here. Then "
        "submit a commit with request_spawn_commit(name, commit_ref). "
        f"Names: {NAME_RULE}. "
        'Returns {"name", "remote": "<name>/config.git"}.',
        args=(NAME,),
    ),
    Op(
        "request_spawn_commit",
        MANAGER_ONLY,
        "Submit a commit of a drafted agent's config repo (see request_spawn_draft) for "
        "the operator's approval (commit_ref: a sha or ref in agents/<name>/config, such "
        "as HEAD). This creates an approval NAME#ID that the operator must approve; the "
        "agent's container is created from that commit only after approval and a "
        'successful deploy. Returns {"approval": "NAME#ID"}.',
        args=(NAME, Arg("commit_ref", str, "a commit sha or ref of the draft's config repo")),
    ),
    Op(
        "draft_write_state",
        MANAGER_ONLY,
        "Write one file of a draft's initial state (see request_spawn_draft): `path` is "
        "relative to the state directory the agent sees as /state (e.g. `notes.md`, "
        "`brief/task.md`; missing directories are made), without '.', '..', a leading "
        "'/' or a symlink on the way, at most 8 levels and 255 characters; "
        "`hyperhive-token`, `hyperhive.env` and `.hyperhive` are refused (hyperhive owns "
        "them). `content` is the whole text of the file (UTF-8, at most 256 KiB; 16 MiB for "
        "the whole state), which replaces any earlier one. Only a draft: once the agent "
        "exists its state is its own. "
        'Returns {"name", "path", "bytes"}.',
        args=(
            NAME,
            Arg("path", str, "relative to the draft's /state, e.g. notes.md"),
            Arg("content", str, "the file's whole text (at most 256 KiB)"),
        ),
    ),
    Op(
        "approvals",
        MANAGER_ONLY,
        "List the approvals waiting for the operator's decision, across all agents: each "
        "with its target NAME#ID, commit, subject and who proposed it when. Use it to see "
        "what you have submitted that is still undecided. "
        'Returns {"approvals": [{"target", "agent", "id", "commit", "state", "subject", '
        '"states"}]}.',
        read_only=True,
    ),
    Op(
        "agent_history",
        MANAGER_ONLY,
        "The full approval history of agent `name`: every approval with each state it "
        "reached (proposal, approved or denied, building, deployed or failed), who did it, "
        "when and why. A denial's reason and a failed build's log tail are here: read them "
        "before proposing again. "
        'Returns {"agent", "approvals": [...]}.',
        args=(NAME,),
        read_only=True,
    ),
    Op(
        "review_reply",
        MANAGER_ONLY,
        "Reply to one of the operator's review comments on an approval. Comments reach you "
        "as a message whose first line is `review_comments: NAME#ID`; each comment there "
        "has a number (`--- comment N by …`), the file and line it is about, the quoted code "
        "and its text. `approval` is that NAME#ID, `comment` the number, `text` your answer "
        "(at most 4000 characters). The reply shows under the comment on the review page, "
        "is kept in git with the conversation and reaches the operator's inbox. To change "
        "the config as asked, commit and propose again with `follows` set to NAME#ID "
        "(request_apply_commit). "
        'Returns {"approval", "comment": <your reply\'s number>}.',
        args=(
            Arg("approval", str, "the approval, NAME#ID"),
            Arg("comment", int, "the number of the comment answered"),
            Arg("text", str, "the reply"),
        ),
    ),
    # -- the harness's (on the agent's socket, not MCP tools) -------------------------------
    Op(
        "turn_report",
        AGENTS,
        "Store one turn's telemetry (broker/stats.py); the inbox depth is counted by the "
        "daemon, after the turn.",
        args=(Arg("report", dict, "the turn's report (harness/events.py)"),),
        tool=False,
    ),
    Op(
        "ack",
        AGENTS,
        "The harness has recorded the messages its leased recv returned.",
        args=(Arg("ids", list[int], "the ids of the messages recorded"),),
        tool=False,
    ),
    Op(
        "release",
        AGENTS,
        "The harness starts (or lost a recv's reply): what it held unacknowledged was "
        "never recorded, so back to the inbox with it.",
        tool=False,
    ),
    Op(
        "give_up",
        AGENTS,
        "The harness gave up on messages after their failed turns: dead letters, kept for "
        "the operator to see and requeue.",
        args=(
            Arg("ids", list[int], "the ids of the messages given up"),
            Arg("reason", str, "the last turn's error"),
        ),
        tool=False,
    ),
    # -- the host socket's (the operator, the CLI, hooks) -----------------------------------
    Op("ping", HOST_ONLY, "Whether a daemon answers on the socket.", tool=False),
    Op(
        "changed",
        HOST_ONLY,
        "Another process wrote a tag in `agent`'s applied repo: the forge updates.",
        args=(Arg("agent", str, "the agent"), Arg("ref", str, "what changed")),
        tool=False,
    ),
    Op(
        "wake",
        HOST_ONLY,
        "Another process wrote to hive.db: the waiting recvs look again.",
        tool=False,
    ),
    Op(
        "check",
        HOST_ONLY,
        "(Re)check proposal `agent`#`id` on the daemon's check workers (workflow/checks.py); "
        'returns {"state": "queued"|"running"|"done", "ahead"?: <checks before it>}.',
        args=(
            Arg("agent", str, "the agent"),
            Arg("id", int, "the approval's id"),
            Arg("rerun", bool, "check again even when it has a result", required=False),
        ),
        tool=False,
    ),
    Op(
        "checks",
        HOST_ONLY,
        "What the check workers have queued and running "
        '({"running": {target: {"started", "log"}}, "queued": [targets]}).',
        tool=False,
    ),
    Op(
        "deploy",
        HOST_ONLY,
        "Queue the build of approval `agent`#`id` on the daemon's build worker; "
        'returns {"ahead": <builds before it>}.',
        args=(Arg("agent", str, "the agent"), Arg("id", int, "the approval's id")),
        tool=False,
    ),
)

OPS: dict[str, Op] = {op.name: op for op in TABLE}


def lookup(name: object) -> Op | None:
    """The op a request names, or None (a request's `op` may be any JSON value)."""
    return OPS.get(name) if isinstance(name, str) else None


def tools_for(role: str) -> list[str]:
    """The MCP tools of `role` (AGENT or MANAGER), in the table's order."""
    return [op.name for op in TABLE if op.tool and role in op.callers]
