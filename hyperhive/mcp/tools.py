"""The tools, as the model sees them: name, description, typed parameters.

Each tool forwards `{"op": <tool name>, **arguments}` to the daemon and returns its reply.
The descriptions are written for the model: what the tool does, when to use it, what it
returns. The server registers the ones the daemon's `whoami` lists for the caller.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from pydantic import Field

# forward(request, timeout_seconds) -> the reply as JSON text
Forward = Callable[[dict, float], Awaitable[str]]

MAX_WAIT = 180.0  # the daemon caps a recv's wait here
RECV_MARGIN = 30.0  # the socket read outlasts the wait by this much
CALL_TIMEOUT = 120.0  # every other op (a spawn writes repos; nothing here builds)

NAME_RULE = "lowercase letters, digits and '-', starting with a letter, at most 31 characters"

DESCRIPTIONS = {
    "send": (
        "Send a text message to another agent, the manager, or the human operator. "
        "`to` is one recipient name: `operator` is the human's dashboard inbox (they read it "
        "there and may reply with a message to you); `manager` is the manager agent; any "
        "other name is an agent (`list_peers` shows who exists). Your deployed policy may "
        "restrict whom you may message (`whoami` shows `policy.allowedRecipients`: null "
        "means anyone); the manager may message anyone. A refused or unknown recipient "
        "returns an error that says why; nothing is sent then. Messages from one sender "
        "arrive in the order sent. The recipient reads it with `recv`. "
        'Returns {"id": <message id>}.'
    ),
    "recv": (
        "Read the messages waiting in your inbox: from agents, the manager, or the "
        "operator (including the operator's answers to your questions). With no argument "
        "(or wait_seconds 0) it looks now and returns at once, with an empty list if "
        "nothing is there. With a positive wait_seconds it waits up to that many seconds "
        f"(at most {MAX_WAIT:.0f}; larger values are capped) and returns as soon as a "
        "message arrives: use that when you have nothing else to do until a reply comes; "
        "call it again after an empty result to keep waiting. Each message is returned "
        "once and then leaves the inbox, so act on it or note it. "
        'Returns {"messages": [{"id", "from", "to", "body", "time"}]}, oldest first '
        "(time: unix seconds)."
    ),
    "whoami": (
        "Who you are in the hive: your agent name, your role (`agent` or `manager`), your "
        "deployed policy (`allowedRecipients`: null means you may message anyone, otherwise "
        "the names you may send to) and the tools you may use. "
        'Returns {"name", "role", "policy", "tools"}.'
    ),
    "list_peers": (
        "List who you can address with `send`: every other agent with its role and its "
        "state (running, failing: its turns fail, crash-looping, stopped, …), and "
        "`operator`, the human. "
        "Your policy may still restrict whom you may message (see `whoami`). "
        'Returns {"peers": [{"name", "role", "state"}]}.'
    ),
    "ask_operator": (
        "Ask the human operator a question that needs their decision or knowledge. It "
        "returns at once with the question's id and does not wait for the answer: the "
        "question shows on the operator's dashboard, and their answer arrives later in "
        "your inbox as a message from `operator` (read it with `recv`; "
        "recv(wait_seconds=180) if you cannot go on without it). `options` is an optional "
        "list of suggested answers, shown as choices. To inform the operator without "
        "asking anything, use send(to='operator') instead. "
        'Returns {"id": <question id>}.'
    ),
    "request_init_config": (
        "Make sure agent `name` has a config repo and get its git remote: for a name that "
        "has no agent yet, it first creates a draft from the default template (as "
        "request_spawn_draft does). The repo is not a path you can open: clone "
        "`$HYPERHIVE_GIT_URL/<remote>` with your token ($HYPERHIVE_TOKEN_FILE), commit, "
        "and push (see your instructions' Git section). Nothing is deployed and no approval "
        "is created: submit a commit with request_apply_commit (an existing agent) or "
        "request_spawn_commit (a draft). "
        'Returns {"name", "remote": "<name>/config.git"}.'
    ),
    "request_apply_commit": (
        "Submit a commit of agent `name`'s config repo for the operator's approval (commit: "
        "a sha or ref in agents/<name>/config, such as HEAD after you commit; an earlier "
        "deployed commit rolls back). This creates an approval NAME#ID that the operator "
        "must approve; nothing is deployed until then. Once approved, the agent's container "
        "is rebuilt from that commit. The operator may deny it with a reason: "
        "`agent_history` shows it, and a failed build's log tail. When the commit answers "
        "an earlier approval (its review comments, its denial), give `follows` as that "
        "NAME#ID: the operator then sees what changed since it. "
        'Returns {"approval": "NAME#ID"}.'
    ),
    "request_spawn": (
        "Create a new agent `name` from the default template in one step: creates its "
        "config repo and state and submits the template's first commit for approval. This "
        "creates an approval NAME#ID that the operator must approve; no container exists "
        "until then, and the approved deploy creates and starts it. To edit the new "
        "agent's config first, use request_spawn_draft instead. "
        f"Names: {NAME_RULE}. "
        'Returns {"approval": "NAME#ID"}.'
    ),
    "request_spawn_draft": (
        "Start a new agent `name` as a draft: creates its config repo (a first commit from "
        "the default template) and an empty state directory, with no container and no "
        "approval. Its config is reached like any agent's, over the git remote: clone "
        "`$HYPERHIVE_GIT_URL/<remote>` with your token, edit agent.nix, commit and push to "
        "its main (a draft takes no refs/for/main). Its initial state (the notes.md and "
        "files the agent finds in /state when it starts) is written with "
        "draft_write_state(name, path, content); no host path is reachable from here. Then "
        "submit a commit with request_spawn_commit(name, commit_ref). "
        f"Names: {NAME_RULE}. "
        'Returns {"name", "remote": "<name>/config.git"}.'
    ),
    "request_spawn_commit": (
        "Submit a commit of a drafted agent's config repo (see request_spawn_draft) for "
        "the operator's approval (commit_ref: a sha or ref in agents/<name>/config, such "
        "as HEAD). This creates an approval NAME#ID that the operator must approve; the "
        "agent's container is created from that commit only after approval and a "
        'successful deploy. Returns {"approval": "NAME#ID"}.'
    ),
    "draft_write_state": (
        "Write one file of a draft's initial state (see request_spawn_draft): `path` is "
        "relative to the state directory the agent sees as /state (e.g. `notes.md`, "
        "`brief/task.md`; missing directories are made), without '.', '..', a leading "
        "'/' or a symlink on the way, at most 8 levels and 255 characters; "
        "`hyperhive-token`, `hyperhive.env` and `.hyperhive` are refused (hyperhive owns "
        "them). `content` is the whole text of the file (UTF-8, at most 256 KiB; 16 MiB for "
        "the whole state), which replaces any earlier one. Only a draft: once the agent "
        "exists its state is its own. "
        'Returns {"name", "path", "bytes"}.'
    ),
    "approvals": (
        "List the approvals waiting for the operator's decision, across all agents: each "
        "with its target NAME#ID, commit, subject and who proposed it when. Use it to see "
        "what you have submitted that is still undecided. "
        'Returns {"approvals": [{"target", "agent", "id", "commit", "state", "subject", '
        '"states"}]}.'
    ),
    "agent_history": (
        "The full approval history of agent `name`: every approval with each state it "
        "reached (proposal, approved or denied, building, deployed or failed), who did it, "
        "when and why. A denial's reason and a failed build's log tail are here: read them "
        "before proposing again. "
        'Returns {"agent", "approvals": [...]}.'
    ),
    "review_reply": (
        "Reply to one of the operator's review comments on an approval. Comments reach you "
        "as a message whose first line is `review_comments: NAME#ID`; each comment there "
        "has a number (`--- comment N by …`), the file and line it is about, the quoted code "
        "and its text. `approval` is that NAME#ID, `comment` the number, `text` your answer "
        "(at most 4000 characters). The reply shows under the comment on the review page, "
        "is kept in git with the conversation and reaches the operator's inbox. To change "
        "the config as asked, commit and propose again with `follows` set to NAME#ID "
        "(request_apply_commit). "
        'Returns {"approval", "comment": <your reply\'s number>}.'
    ),
}

AgentName = Annotated[str, Field(description=f"the agent's name: {NAME_RULE}")]


def recv_timeout(wait_seconds: float | None) -> float:
    """How long the socket read may take for a recv: longer than the daemon may wait."""
    wait = wait_seconds if wait_seconds and wait_seconds > 0 else 0.0
    return min(wait, MAX_WAIT) + RECV_MARGIN


def tool_functions(forward: Forward) -> dict[str, Callable]:
    """One async function per tool; its signature is the tool's input schema."""

    async def call(request: dict) -> str:
        return await forward(request, CALL_TIMEOUT)

    async def send(
        to: Annotated[
            str, Field(description="recipient: an agent's name, `manager` or `operator`")
        ],
        body: Annotated[str, Field(description="the message text")],
    ) -> str:
        return await call({"op": "send", "to": to, "body": body})

    async def recv(
        wait_seconds: Annotated[
            float | None,
            Field(
                description=(
                    "omit (or 0) to look now and return at once; a positive number waits up "
                    f"to that many seconds (at most {MAX_WAIT:.0f}) for a message"
                )
            ),
        ] = None,
    ) -> str:
        request = {"op": "recv", "wait_seconds": wait_seconds}
        return await forward(request, recv_timeout(wait_seconds))

    async def whoami() -> str:
        return await call({"op": "whoami"})

    async def list_peers() -> str:
        return await call({"op": "list_peers"})

    async def ask_operator(
        question: Annotated[str, Field(description="the question, self-contained")],
        options: Annotated[
            list[str] | None, Field(description="optional suggested answers, shown as choices")
        ] = None,
    ) -> str:
        return await call({"op": "ask_operator", "question": question, "options": options})

    async def request_init_config(name: AgentName) -> str:
        return await call({"op": "request_init_config", "name": name})

    async def request_apply_commit(
        name: AgentName,
        commit: Annotated[str, Field(description="a commit sha or ref of its config repo")],
        follows: Annotated[
            str | None,
            Field(description="optional: the NAME#ID this proposal answers (its comments)"),
        ] = None,
    ) -> str:
        request = {"op": "request_apply_commit", "name": name, "commit": commit}
        if follows:
            request["follows"] = follows
        return await call(request)

    async def request_spawn(name: AgentName) -> str:
        return await call({"op": "request_spawn", "name": name})

    async def request_spawn_draft(name: AgentName) -> str:
        return await call({"op": "request_spawn_draft", "name": name})

    async def request_spawn_commit(
        name: AgentName,
        commit_ref: Annotated[
            str, Field(description="a commit sha or ref of the draft's config repo")
        ],
    ) -> str:
        request = {"op": "request_spawn_commit", "name": name, "commit_ref": commit_ref}
        return await call(request)

    async def draft_write_state(
        name: AgentName,
        path: Annotated[str, Field(description="relative to the draft's /state, e.g. notes.md")],
        content: Annotated[str, Field(description="the file's whole text (at most 256 KiB)")],
    ) -> str:
        request = {"op": "draft_write_state", "name": name, "path": path, "content": content}
        return await call(request)

    async def approvals() -> str:
        return await call({"op": "approvals"})

    async def agent_history(name: AgentName) -> str:
        return await call({"op": "agent_history", "name": name})

    async def review_reply(
        approval: Annotated[str, Field(description="the approval, NAME#ID")],
        comment: Annotated[int, Field(description="the number of the comment answered")],
        text: Annotated[str, Field(description="the reply")],
    ) -> str:
        request = {"op": "review_reply", "approval": approval, "comment": comment, "text": text}
        return await call(request)

    functions = [
        send,
        recv,
        whoami,
        list_peers,
        ask_operator,
        request_init_config,
        request_apply_commit,
        request_spawn,
        request_spawn_draft,
        request_spawn_commit,
        draft_write_state,
        approvals,
        agent_history,
        review_reply,
    ]
    return {f.__name__: f for f in functions}
