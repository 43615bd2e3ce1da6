"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 (port 0, in a thread) that
answers the real agent CLIs (Claude Code, pi) the way api.anthropic.com does, streamed.

Scripted replies. An *agent request* is a `POST /v1/messages` whose `tools` offer the shell
tool named at construction (`Bash` for claude, `bash` for pi). When its conversation ends
with a new user prompt (not a tool result) holding a text registered with `on_prompt`, the
reply calls that tool with input `{"command": ...}`; otherwise (the tool result came back, or
an unknown prompt) the reply is the final text `FINAL_TEXT`. Every other messages request
(titles, summaries, quota probes) gets a short text. Streaming requests get the real event
sequence: `message_start`, `content_block_start`/`_delta`/`_stop` (text_delta, or
input_json_delta for a tool call), `message_delta` with the stop reason and `message_stop`;
others get one JSON message. `count_tokens` and the model list answer with plausible shapes;
anything else is a 404 in the API's error shape. Every request is recorded (`requests`,
`agent_requests()`); `user_texts`, `tool_calls` and `tool_results` read a recorded body.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Iterable

from bot_bottle.demo_support._local_server import ApiHandler, LocalHTTPServer

FINAL_TEXT = "All done."
MODEL_IDS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict      # lower-case names
    body: dict


def _blocks(content) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def user_texts(body: dict) -> list[str]:
    """The text blocks of every user message of a messages request, in order."""
    return [b.get("text", "") for m in body.get("messages", []) if m.get("role") == "user"
            for b in _blocks(m.get("content")) if b.get("type") == "text"]


def tool_calls(body: dict) -> list[dict]:
    """The input of every tool call the assistant made in the conversation, in order."""
    return [b.get("input") for m in body.get("messages", []) if m.get("role") == "assistant"
            for b in _blocks(m.get("content")) if b.get("type") == "tool_use"]


def tool_results(body: dict) -> list[str]:
    """The content of every tool result in the conversation, flattened to text."""
    out = []
    for m in body.get("messages", []):
        for b in _blocks(m.get("content")):
            if b.get("type") == "tool_result":
                c = b.get("content")
                out.append(c if isinstance(c, str) else
                           "".join(x.get("text", "") for x in _blocks(c)))
    return out


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _stream(message: dict) -> Iterable[bytes]:
    """The SSE events of `message`, block by block, as the real API streams them."""
    head = dict(message, content=[], stop_reason=None,
                usage={"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1})
    yield _sse("message_start", {"type": "message_start", "message": head})
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": {"type": "text", "text": ""}})
            text = block["text"]
            for part in (text[: len(text) // 2], text[len(text) // 2:]):
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": part}})
        else:
            yield _sse("content_block_start", {"type": "content_block_start", "index": i,
                                               "content_block": dict(block, input={})})
            raw = json.dumps(block["input"])
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2:]):
                yield _sse("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": part}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
    yield _sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": message["stop_reason"],
                                           "stop_sequence": None},
                                 "usage": {"output_tokens": message["usage"]["output_tokens"]}})
    yield _sse("message_stop", {"type": "message_stop"})


class FakeAnthropic(LocalHTTPServer):
    """`FakeAnthropic(tool="Bash").start()`, `on_prompt(text, command)`, `stop()`."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._commands: dict[str, str] = {}

    # ---- lifecycle
    def start(self) -> "FakeAnthropic":
        fake = self

        class Handler(_Handler):
            api = fake
        self._serve(Handler)
        return self

    # ---- script and record
    def on_prompt(self, text: str, command: str) -> None:
        """Answer a new user prompt containing `text` with a call of the shell tool running
        `command` (keyed by prompt, so tests sharing one server cannot take each other's)."""
        with self.lock:
            self._commands[text] = command

    def agent_requests(self) -> list[dict]:
        """The bodies of the messages requests that offered the shell tool, in order."""
        with self.lock:
            return [r.body for r in self.requests if r.path.split("?")[0] == "/v1/messages"
                    and self._offers_tool(r.body)]

    def _offers_tool(self, body: dict) -> bool:
        return any(t.get("name") == self.tool for t in body.get("tools") or [])

    def reply(self, body: dict) -> dict:
        """The message answering a messages request (see the module docstring)."""
        content: list[dict] = [{"type": "text", "text": "OK"}]
        stop = "end_turn"
        if self._offers_tool(body):
            content = [{"type": "text", "text": FINAL_TEXT}]
            # the conversation's last turn (system-role notes a CLI may append do not count)
            turns = [m for m in body.get("messages") or [] if m.get("role") != "system"]
            last = turns[-1] if turns else {}
            new_prompt = last.get("role") == "user" and not any(
                b.get("type") == "tool_result" for b in _blocks(last.get("content")))
            texts = [b.get("text", "") for b in _blocks(last.get("content"))
                     if b.get("type") == "text"] if new_prompt else []
            with self.lock:
                command = next((c for key, c in self._commands.items()
                                if any(key in t for t in texts)), None)
            if command is not None:
                content = [{"type": "text", "text": "Running it."},
                           {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20],
                            "name": self.tool, "input": {"command": command}}]
                stop = "tool_use"
        return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                "model": body.get("model") or MODEL_IDS[0], "content": content,
                "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 5,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


class _Handler(ApiHandler):
    api: FakeAnthropic
    REQUEST_ID_HEADER = "request-id"

    def _record(self, body: dict) -> None:
        with self.api.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.api.requests.append(Request(self.command, self.path, headers, body))

    def _not_found(self) -> None:
        self._json(404, {"type": "error", "error": {"type": "not_found_error",
                                                    "message": f"no route {self.path}"}})

    def do_GET(self):
        self._record({})
        path = self.path.split("?")[0]
        if path == "/v1/models":
            data = [{"type": "model", "id": m, "display_name": m,
                     "created_at": "2025-01-01T00:00:00Z"} for m in MODEL_IDS]
            return self._json(200, {"data": data, "has_more": False,
                                    "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]})
        if path.startswith("/v1/models/"):
            m = path.rsplit("/", 1)[1]
            return self._json(200, {"type": "model", "id": m, "display_name": m,
                                    "created_at": "2025-01-01T00:00:00Z"})
        self._not_found()

    def do_HEAD(self):
        self._record({})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._json(413, {"type": "error", "error": {
                "type": "request_too_large", "message": "body too large"}})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        self._record(body)
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            return self._json(200, {"input_tokens": len(json.dumps(body)) // 4})
        if path != "/v1/messages":
            return self._not_found()
        message = self.api.reply(body)
        if not body.get("stream"):
            return self._json(200, message)
        self._sse(_stream(message))
