"""A fake OpenAI Responses API: a real HTTP server on 127.0.0.1 (port 0, in a thread) that
answers the real Codex CLI the way api.openai.com does, streamed as server-sent events.

Scripted replies. An *agent request* is a `POST /v1/responses`. When its conversation ends
with a new user prompt (not a tool result), the next queued command is answered as a call of
the shell tool the request offers, shaped the way that tool takes it: codex 0.171 offers its
default model one JavaScript tool `exec` (a `custom` tool inside an `additional_tools` input
item) whose code calls `tools.exec_command({cmd})`; other models get `exec_command` (`{cmd}`)
or, in older releases, `shell_command` (`{command}`) or `shell` (`{command: [argv]}`) as
plain function tools. Once the tool output comes back, or when no command is queued, the
reply is the final text `FINAL_TEXT`. The stream is the real event sequence:
`response.created`, `response.in_progress`, per output item `response.output_item.added`,
its deltas (`output_text`, `function_call_arguments`, `custom_tool_call_input`) and
`response.output_item.done`, then `response.completed` with the usage. The model list answers
in the API's shape; anything else is a 404 in the API's error shape. Every request is
recorded (`requests`, `agent_requests()`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterable

from bot_bottle.demo_support._local_server import ApiHandler, LocalHTTPServer

FINAL_TEXT = "All done."
MODEL_IDS = ("gpt-5-codex", "gpt-5")
MAX_BODY = 64 * 1024 * 1024
TOOL_OUTPUTS = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict
    headers: dict[str, str]


def user_texts(body: dict) -> list[str]:
    """The `input_text` parts of every user message of a responses request, in order
    (codex's own context blocks, such as `<environment_context>`, included)."""
    return [part.get("text", "") for item in body.get("input") or []
            if item.get("type", "message") == "message" and item.get("role") == "user"
            for part in item.get("content") or [] if part.get("type") == "input_text"]


def tool_outputs(body: dict) -> list[str]:
    """The output of every tool call in the conversation, flattened to text."""
    out = []
    for item in body.get("input") or []:
        if item.get("type") in TOOL_OUTPUTS:
            value = item.get("output")
            out.append(value if isinstance(value, str) else
                       "".join(p.get("text", "") for p in value or [] if isinstance(p, dict)))
    return out


def offered_tools(body: dict) -> list[dict]:
    """Every tool a request offers: its `tools` and those of its `additional_tools` input
    items, namespaces flattened."""
    found: list[dict] = []

    def walk(tools) -> None:
        for tool in tools or []:
            found.append(tool)
            walk(tool.get("tools"))
    walk(body.get("tools"))
    for item in body.get("input") or []:
        if item.get("type") == "additional_tools":
            walk(item.get("tools"))
    return found


def shell_call(tools: list[dict], command: str) -> dict:
    """The output item calling the first shell tool on offer with `command`."""
    call_id = "call_" + uuid.uuid4().hex[:24]
    by_name = {t.get("name"): t for t in tools if t.get("type") in ("function", "custom")}
    if by_name.get("exec", {}).get("type") == "custom":
        code = f"const r = await tools.exec_command({{cmd: {json.dumps(command)}}});\ntext(r.output);"
        return {"type": "custom_tool_call", "id": "ctc_" + call_id[5:], "call_id": call_id,
                "name": "exec", "input": code, "status": "completed"}
    for name, args in (("exec_command", {"cmd": command}), ("shell_command", {"command": command}),
                       ("shell", {"command": ["bash", "-lc", command]})):
        if name in by_name:
            return {"type": "function_call", "id": "fc_" + call_id[5:], "call_id": call_id,
                    "name": name, "arguments": json.dumps(args), "status": "completed"}
    raise LookupError(f"no shell tool offered (tools: {sorted(map(str, by_name))})")


def _sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _halves(text: str) -> tuple[str, str]:
    return text[: len(text) // 2], text[len(text) // 2:]


def _stream(response: dict) -> Iterable[bytes]:
    """The SSE events of `response`, item by item, as the real API streams them."""
    seq = iter(range(1_000_000))
    head = dict(response, status="in_progress", output=[], usage=None)
    yield _sse({"type": "response.created", "sequence_number": next(seq), "response": head})
    yield _sse({"type": "response.in_progress", "sequence_number": next(seq), "response": head})
    for i, item in enumerate(response["output"]):
        at = {"item_id": item["id"], "output_index": i}
        start = dict(item, status="in_progress")
        if item["type"] == "message":
            start["content"] = []
        elif item["type"] == "function_call":
            start["arguments"] = ""
        elif item["type"] == "custom_tool_call":
            start["input"] = ""
        yield _sse({"type": "response.output_item.added", "sequence_number": next(seq),
                    "output_index": i, "item": start})
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            yield _sse({"type": "response.content_part.added", "sequence_number": next(seq),
                        **at, "content_index": 0, "part": part})
            for piece in _halves(text):
                yield _sse({"type": "response.output_text.delta", "sequence_number": next(seq),
                            **at, "content_index": 0, "delta": piece})
            yield _sse({"type": "response.output_text.done", "sequence_number": next(seq),
                        **at, "content_index": 0, "text": text})
            yield _sse({"type": "response.content_part.done", "sequence_number": next(seq),
                        **at, "content_index": 0, "part": dict(part, text=text)})
        else:
            kind, key = (("function_call_arguments", "arguments")
                         if item["type"] == "function_call" else ("custom_tool_call_input", "input"))
            for piece in _halves(item[key]):
                yield _sse({"type": f"response.{kind}.delta", "sequence_number": next(seq),
                            **at, "delta": piece})
            yield _sse({"type": f"response.{kind}.done", "sequence_number": next(seq),
                        **at, key: item[key]})
        yield _sse({"type": "response.output_item.done", "sequence_number": next(seq),
                    "output_index": i, "item": item})
    yield _sse({"type": "response.completed", "sequence_number": next(seq), "response": response})


class FakeOpenAI(LocalHTTPServer):
    """`FakeOpenAI().start()`; `queue(command)` per expected prompt; `base_url`; `stop()`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._commands: list[str] = []

    # ---- lifecycle
    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(_Handler):
            api = fake
        self._serve(Handler)
        return self

    @property
    def base_url(self) -> str:
        """What `OPENAI_BASE_URL` holds for the real API: the origin and `/v1`."""
        return self.url + "/v1"

    # ---- script and record
    def queue(self, command: str) -> None:
        """Answer the next new user prompt with a call of the shell tool running `command`."""
        with self.lock:
            self._commands.append(command)

    def agent_requests(self) -> list[dict]:
        """The bodies of the `POST /v1/responses` requests, in order."""
        with self.lock:
            return [r.body for r in self.requests
                    if r.method == "POST" and r.path.split("?")[0] == "/v1/responses"]

    def reply(self, body: dict) -> dict:
        """The response object answering a responses request (see the module docstring)."""
        # the conversation's last prompt or tool output decides (codex may add other items)
        turns = [i for i in body.get("input") or [] if i.get("type") in TOOL_OUTPUTS
                 or (i.get("type", "message") == "message" and i.get("role") == "user")]
        new_prompt = bool(turns) and turns[-1].get("type", "message") == "message"
        with self.lock:
            command = self._commands.pop(0) if new_prompt and self._commands else None
        if command is not None:
            output = [shell_call(offered_tools(body), command)]
        else:
            output = [{"type": "message", "id": "msg_" + uuid.uuid4().hex[:24],
                       "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": FINAL_TEXT,
                                    "annotations": []}]}]
        return {"id": "resp_" + uuid.uuid4().hex[:24], "object": "response",
                "created_at": int(time.time()), "status": "completed",
                "model": body.get("model") or MODEL_IDS[0], "output": output,
                "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": 15}}


class _Handler(ApiHandler):
    api: FakeOpenAI
    REQUEST_ID_HEADER = "x-request-id"
    EVENT_STREAM_TYPE = "text/event-stream; charset=utf-8"

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": None, "code": code}})

    def _record(self, body: dict) -> None:
        with self.api.lock:
            self.api.requests.append(Request(self.command, self.path, body, dict(self.headers)))

    def do_GET(self):
        self._record({})
        path = self.path.split("?")[0]
        models = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
                  for m in MODEL_IDS]
        if path == "/v1/models":
            return self._json(200, {"object": "list", "data": models})
        if path.startswith("/v1/models/") and path.rsplit("/", 1)[1] in MODEL_IDS:
            return self._json(200, next(m for m in models if m["id"] == path.rsplit("/", 1)[1]))
        self._error(404, f"Invalid URL (GET {path})")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._error(413, "request body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        self._record(body)
        path = self.path.split("?")[0]
        if path != "/v1/responses":
            return self._error(404, f"Invalid URL (POST {path})")
        try:
            response = self.api.reply(body)
        except LookupError as exc:  # a request this fake cannot script: say so, as the API would
            return self._error(400, str(exc), "unsupported_tools")
        if not body.get("stream"):
            return self._json(200, response)
        self._sse(_stream(response))
