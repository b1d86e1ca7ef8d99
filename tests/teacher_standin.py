"""A stand-in for a hosted teacher LLM: an OpenAI-compatible `/v1/chat/completions` on loopback.

It is a test double for the one part that cannot run here (a hosted teacher model), and it
behaves like an endpoint: a real HTTP/1.1 server on 127.0.0.1, port 0, in a thread, parsing the
request as a teacher would read it. It answers with a deterministic one-sentence rationale
built from the request's text, label and category, and it can be told to misbehave:

- `fail_first(k, status, retry_after=None)`: the next k requests get that status (429/500/...);
- `drop_first(k)`: the next k connections close without an answer (a connection error);
- `fail_text(substring, status, times=None)`: requests about matching texts get that status;
- `bad_answers(substring, kind, times=None)`: matching texts get a bad rationale (`leak`,
  `contradict`, `multi`, `empty`, `long`) `times` times (None: always), then a good one;
- `delay`: seconds each request takes (so that concurrent requests overlap);
- `heal()`: forget all of the above.

What it saw is recorded: `requests` (one dict per request), `asked` (a Counter of texts with
a 200 answer), `max_in_flight`. Use it as a context manager; `url` is the base to pass as
`--teacher-url`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TEXT = re.compile(r"<<<MESSAGE\n(.*)\nMESSAGE>>>", re.DOTALL)
_LABEL = re.compile(r"^Gold label: (\w+)", re.MULTILINE)
_CATEGORY = re.compile(r"^Category: (.+)$", re.MULTILINE)


def good_rationale(text: str, label: str, category: str | None) -> str:
    """The stand-in's answer: one sentence that passes the checks and follows the label."""
    words = len(text.split())
    if label == "malicious":
        kind = f", a case of {category.replace('_', ' ')}" if category else ""
        return f"The {words}-word message pushes the agent to set aside its rules{kind}."
    return f"The {words}-word message is an ordinary request that leaves the agent's instructions alone."


def bad_rationale(kind: str, label: str) -> str:
    if kind == "leak":
        return f"This message is clearly {label}."
    if kind == "contradict":
        if label == "malicious":
            return "The message is a harmless question about everyday topics."
        return "The message is a jailbreak that tries to bypass the agent's rules."
    if kind == "multi":
        return "The message asks for something. It also wants more than that."
    if kind == "empty":
        return ""
    if kind == "long":
        return "The message " + "goes on " * 100 + "forever."
    raise ValueError(f"unknown bad-answer kind {kind!r}")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that was cancelled or killed mid-request is part of the tests, not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class TeacherStandIn:
    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.asked: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._last_activity = time.monotonic()  # a request began or ended
        self._lock = threading.Lock()
        self._fail: list[tuple[int, int, str | None]] = []  # (remaining, status, retry_after)
        self._drop = 0
        self._text_status: list[tuple[str, int, int | None]] = []
        self._bad: dict[str, list[Any]] = {}  # substring -> [kind, remaining or None]
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="teacher-standin", daemon=True
        )

    # -- control -------------------------------------------------------------------------------

    def fail_first(self, k: int, status: int = 500, retry_after: str | None = None) -> None:
        with self._lock:
            self._fail.append((k, status, retry_after))

    def drop_first(self, k: int) -> None:
        with self._lock:
            self._drop += k

    def fail_text(self, substring: str, status: int, times: int | None = None) -> None:
        with self._lock:
            self._text_status.append((substring, status, times))

    def bad_answers(self, substring: str, kind: str, times: int | None = None) -> None:
        bad_rationale(kind, "benign")  # unknown kinds fail here, not inside the server
        with self._lock:
            self._bad[substring] = [kind, times]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def heal(self) -> None:
        """Forget every failure and bad answer it was told to give: a healthy teacher from now on."""
        with self._lock:
            self._fail.clear()
            self._drop = 0
            self._text_status.clear()
            self._bad.clear()

    def wait_idle(self, timeout: float = 10.0, quiet: float = 0.3) -> None:
        """Until no request is being handled and none has begun for `quiet` seconds.

        Requests of a killed or cancelled client finish here on their own, and one it sent just
        before may still sit in the socket, unseen by `in_flight`: hence the quiet period.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.in_flight and time.monotonic() - self._last_activity >= quiet:
                    return
            time.sleep(0.01)

    @property
    def ok_requests(self) -> int:
        return sum(1 for r in self.requests if r["status"] == 200)

    def __enter__(self) -> TeacherStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- behaviour -----------------------------------------------------------------------------

    def _decide(self, text: str, label: str, category: str | None) -> tuple[str, int, str | None, str | None]:
        """(action, status, retry_after, answer) for one parsed request; called under the lock."""
        if self._drop > 0:
            self._drop -= 1
            return "drop", 0, None, None
        if self._fail:
            remaining, status, retry_after = self._fail[0]
            if remaining <= 1:
                self._fail.pop(0)
            else:
                self._fail[0] = (remaining - 1, status, retry_after)
            return "status", status, retry_after, None
        for i, (substring, status, times) in enumerate(self._text_status):
            if substring in text and times != 0:
                if times is not None:
                    self._text_status[i] = (substring, status, times - 1)
                return "status", status, None, None
        for substring, entry in self._bad.items():
            kind, times = entry
            if substring in text and times != 0:
                if times is not None:
                    entry[1] = times - 1
                return "answer", 200, None, bad_rationale(kind, label)
        return "answer", 200, None, good_rationale(text, label, category)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in one segment, at once: without these, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every answer.
            disable_nagle_algorithm = True
            wbufsize = 1 << 16

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                with standin._lock:
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                    standin._last_activity = time.monotonic()
                try:
                    self._post()
                finally:
                    with standin._lock:
                        standin.in_flight -= 1
                        standin._last_activity = time.monotonic()

            def _post(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if standin.delay:
                    time.sleep(standin.delay)
                if not self.path.endswith("/v1/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    request = json.loads(body)
                    messages = request["messages"]
                    prompt = next(m["content"] for m in messages if m["role"] == "user")
                    text = _TEXT.search(prompt).group(1)  # type: ignore[union-attr]
                    label = _LABEL.search(prompt).group(1)  # type: ignore[union-attr]
                    category_match = _CATEGORY.search(prompt)
                except (ValueError, KeyError, TypeError, StopIteration, AttributeError) as exc:
                    self._send(400, {"error": {"message": f"stand-in cannot read the request: {exc!r}"}})
                    return
                category = category_match.group(1).strip() if category_match else None
                category = None if category == "none" else category
                with standin._lock:
                    action, status, retry_after, answer = standin._decide(text, label, category)
                    standin.requests.append(
                        {"text": text, "label": label, "category": category, "status": status,
                         "turns": len(messages), "model": request.get("model"),
                         "authorization": self.headers.get("Authorization"), "action": action,
                         "time": time.monotonic()}
                    )  # fmt: skip
                    if status == 200:
                        standin.asked[text] += 1
                if action == "drop":
                    self.close_connection = True
                    return  # no status line at all: the client sees the connection close
                if action == "status":
                    headers = {"Retry-After": retry_after} if retry_after is not None else None
                    self._send(status, {"error": {"message": f"stand-in says {status}"}}, headers)
                    return
                assert answer is not None
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-standin-{len(standin.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request.get("model"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt) // 4,
                            "completion_tokens": max(1, len(answer) // 4),
                            "total_tokens": len(prompt) // 4 + max(1, len(answer) // 4),
                        },
                    },
                )

        return Handler


__all__ = ["TeacherStandIn", "bad_rationale", "good_rationale"]
