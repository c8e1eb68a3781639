"""A scripted stand-in for the Anthropic Messages API, for the real-CLI tests.

A threaded HTTP server on 127.0.0.1 (an ephemeral port) that the real `claude` reaches
through `ANTHROPIC_BASE_URL`. It streams `POST /v1/messages` answers as Server-Sent Events
exactly as the API does (`message_start`, `content_block_start` of a `text` or `tool_use`
block, `content_block_delta` `text_delta`/`input_json_delta`, `content_block_stop`,
`message_delta` with `stop_reason` and `usage`, `message_stop`), answers a non-streamed
request with the whole message and `count_tokens` with a count, and logs every request
(`requests`).

It keeps no state: each answer is worked out from the conversation in the request. The
turn's script is the `api: …` lines of the last user message that is not a tool result
(the harness's prompt, i.e. the messages' bodies); each assistant message after it is one
step done:

- `api: call <tool> <json>`   a `tool_use` of that tool (its full name, e.g. `Bash` or
                              `mcp__hyperhive__send`) with that input
- `api: say <text>`           a text block (the turn's last words unless more follows)
- `api: bloat`                nothing in this turn; any later request holding this line
                              (a resumed session) is "prompt is too long" until the
                              conversation was compacted (the CLI compacts by itself)
- `api: too-long`             this very turn is "prompt is too long", always

A compaction request (the CLI's summary prompt) is answered with a summary holding
`SUMMARY_MARKER`, which is how later requests know the conversation was compacted.

With `StandIn.overflow` set, every compaction request and every request that carries an
earlier turn (an assistant message before its turn's user message) is "prompt is too
long": a session past the window whose compaction fails (the CLI's own retries with the
conversation truncated included), which only a fresh session gets past.
"""

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "claude-sonnet-4-5-20250929"
SUMMARY_MARKER = "STANDIN-SUMMARY"
DIRECTIVE_RE = re.compile(r"^api: (\S+) ?(.*)$", re.MULTILINE)
# the CLI's compaction prompt (manual /compact and auto-compaction alike)
COMPACT_RE = re.compile(r"create a detailed summary of the conversation", re.IGNORECASE)
INPUT_TOKENS = 1000  # every answer's usage: known numbers make the cost checkable
OUTPUT_TOKENS = 100
MAX_BODY = 64 << 20


def _texts(content: object) -> list[str]:
    """Every text in a message's content: a string, text blocks, tool results' texts."""
    if isinstance(content, str):
        return [content]
    out = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            out += _texts(block.get("content"))
    return out


def _is_tool_result(message: dict) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


@dataclass
class Answer:
    """What to answer: content blocks and a stop reason, or an HTTP error."""

    blocks: list[dict] = field(default_factory=list)
    stop_reason: str = "end_turn"
    error: tuple[int, str, str] | None = None  # (status, type, message)


def too_long() -> Answer:
    return Answer(
        error=(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")
    )


def decide(body: dict, overflow: bool = False) -> Answer:
    """The next step of the conversation in `body`."""
    messages = body.get("messages") or []
    everything = "\n".join(t for m in messages for t in _texts(m.get("content")))
    last = messages[-1] if messages else {}
    last_text = "\n".join(_texts(last.get("content")))
    compacted = SUMMARY_MARKER in everything
    if COMPACT_RE.search(last_text):
        if overflow:
            return too_long()
        return Answer([{"type": "text", "text": f"<summary>{SUMMARY_MARKER}: the work so far."}])
    # the turn: the last user message that is not a tool result
    start = next(
        (
            i
            for i in range(len(messages) - 1, -1, -1)
            if messages[i].get("role") == "user" and not _is_tool_result(messages[i])
        ),
        None,
    )
    if start is None:
        return Answer([{"type": "text", "text": "Nothing to do."}])
    turn_text = "\n".join(_texts(messages[start].get("content")))
    earlier = "\n".join(t for m in messages[:start] for t in _texts(m.get("content")))
    if overflow and any(m.get("role") == "assistant" for m in messages[:start]):
        return too_long()
    if not compacted and "api: bloat" in earlier:
        return too_long()
    steps = [(v, rest) for v, rest in DIRECTIVE_RE.findall(turn_text) if v in ("call", "say")]
    if "api: too-long" in turn_text:
        return too_long()
    done = sum(1 for m in messages[start + 1 :] if m.get("role") == "assistant")
    if done >= len(steps):
        return Answer([{"type": "text", "text": "Done."}])
    verb, rest = steps[done]
    if verb == "say":
        return Answer([{"type": "text", "text": rest}])
    name, _, args = rest.partition(" ")
    block = {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": json.loads(args or "{}"),
    }
    return Answer([{"type": "text", "text": f"Calling {name}."}, block], "tool_use")


def _usage(output: int | None = None) -> dict:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": OUTPUT_TOKENS if output is None else output,
    }


def _message(answer: Answer, model: str) -> dict:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": answer.blocks,
        "stop_reason": answer.stop_reason,
        "stop_sequence": None,
        "usage": _usage(),
    }


def sse_events(answer: Answer, model: str) -> list[tuple[str, dict]]:
    """The stream of one answer, event by event, as the API sends it."""
    start = {**_message(answer, model), "content": [], "stop_reason": None}
    start["usage"] = _usage(output=1)
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for i, block in enumerate(answer.blocks):
        if block["type"] == "text":
            opening = {"type": "text", "text": ""}
            text = block["text"]
            deltas = [
                {"type": "text_delta", "text": text[j : j + 20]} for j in range(0, len(text), 20)
            ]
        else:
            opening = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": raw[j : j + 20]}
                for j in range(0, len(raw), 20)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": opening},
            )
        )
        if i == 0:
            events.append(("ping", {"type": "ping"}))
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": answer.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet: requests are logged
        pass

    def _send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.standin.log(self.command, self.path, None)
        self._send_json(
            404, {"type": "error", "error": {"type": "not_found_error", "message": "not here"}}
        )

    def do_HEAD(self) -> None:
        self.server.standin.log(self.command, self.path, None)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            self._send_json(
                413,
                {"type": "error", "error": {"type": "request_too_large", "message": "too large"}},
            )
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        path = self.path.split("?")[0]
        self.entry = self.server.standin.log(self.command, self.path, body)
        if not isinstance(body, dict):
            self._send_json(
                400,
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "body is not JSON"},
                },
            )
        elif path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": INPUT_TOKENS})
        elif path == "/v1/messages":
            self._messages(body)
        else:
            self._send_json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )

    def _messages(self, body: dict) -> None:
        answer = decide(body, self.server.standin.overflow)
        model = str(body.get("model") or MODEL)
        self.entry["status"] = answer.error[0] if answer.error else 200
        if answer.error:
            status, kind, text = answer.error
            self._send_json(status, {"type": "error", "error": {"type": kind, "message": text}})
            return
        if not body.get("stream"):
            self._send_json(200, _message(answer, model))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for name, data in sse_events(answer, model):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: "StandIn"


class StandIn:
    """The server, started on an ephemeral port; a context manager."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.overflow = False  # resumed sessions and compactions: "prompt is too long"
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def log(self, method: str, path: str, body: dict | None) -> dict:
        entry = {"method": method, "path": path, "body": body, "time": time.time(), "status": None}
        with self._lock:
            self.requests.append(entry)
        return entry

    def messages_requests(self, status: int | None = None) -> list[dict]:
        """The bodies of the `/v1/messages` requests (those answered `status`)."""
        with self._lock:
            return [
                r["body"]
                for r in self.requests
                if r["path"].split("?")[0] == "/v1/messages"
                and (status is None or r["status"] == status)
            ]

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
