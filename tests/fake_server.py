"""A scripted OpenAI-compatible server on 127.0.0.1 for the endpoint tests, and a proxy that injects
faults in front of a real one. Standard library only; each runs in a thread of the test process."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: What a handler answers: (status, JSON body, extra headers); or None to close the connection unanswered.
Answer = tuple[int, dict[str, Any], dict[str, str]] | None


@dataclass
class Script:
    """What the fake server answers; it records every request it gets."""

    models: list[str] = field(default_factory=lambda: ["served-model"])
    #: Called with the request body of each chat completion; returns the answer.
    chat: Callable[[dict[str, Any]], Answer] = lambda body: (200, completion(reply_to(body)), {})
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def reply_to(body: dict[str, Any]) -> str:
    return "echo: " + body["messages"][-1]["content"]


def completion(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def _handler(script: Script) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, answer: Answer) -> None:
            if answer is None:
                self.close_connection = True
                self.connection.close()
                return
            status, body, headers = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.endswith("/models"):
                self._send((200, {"object": "list", "data": [{"id": m} for m in script.models]}, {}))
            else:
                self._send((404, {"error": {"message": f"no route {self.path}"}}, {}))

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append(body)
                script.headers.append(dict(self.headers))
            if script.delay_s:
                time.sleep(script.delay_s)
            self._send(script.chat(body))

    return Handler


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run a handler on a free port of 127.0.0.1; yields the API base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_server(script: Script) -> Iterator[str]:
    with serve(_handler(script)) as url:
        yield url


@dataclass
class Faults:
    """What the proxy does to the requests it forwards: the first ``fail`` chat requests get ``status``
    (with ``Retry-After: 0``), chat request number ``slow_at`` (1-based) waits ``slow_s`` first."""

    fail: int = 0
    status: int = 500
    slow_at: int = 0
    slow_s: float = 0.0
    #: After this many forwarded answers, call ``on_count`` once (e.g. to kill the server behind).
    count_to: int = 0
    on_count: Callable[[], None] | None = None
    seen: int = 0
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def fault_proxy(target: str, faults: Faults) -> Iterator[str]:
    """A proxy on 127.0.0.1 in front of the API base ``target`` that injects ``faults``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _relay(self, method: str, data: bytes | None) -> bool:
            path = self.path.removeprefix("/v1")
            request = urllib.request.Request(
                target + path, data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=600) as answer:
                    status, body = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            except OSError:  # the server behind is gone: so is this connection
                self.close_connection = True
                self.connection.close()
                return False
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self._relay("GET", None)

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            data = self.rfile.read(int(self.headers["Content-Length"]))
            with faults.lock:
                faults.seen += 1
                number = faults.seen
            if number <= faults.fail:
                body = json.dumps({"error": {"message": f"injected {faults.status}"}}).encode()
                self.send_response(faults.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if number == faults.slow_at:
                time.sleep(faults.slow_s)
            if not self._relay("POST", data):
                return
            with faults.lock:
                faults.forwarded += 1
                reached = faults.forwarded == faults.count_to
            if reached and faults.on_count is not None:
                faults.on_count()

    with serve(Handler) as url:
        yield url


@dataclass(frozen=True)
class Seen:
    """One request a watched server got, GET or POST."""

    method: str
    path: str
    headers: dict[str, str]


@contextmanager
def watched_server(
    script: Script, seen: list[Seen], *, moves: dict[str, str] | None = None, status: int = 302
) -> Iterator[str]:
    """The fake server, recording every request in ``seen``; a request whose path is a key of ``moves``
    is answered with ``status`` and a ``Location`` of that key's value (a URL, or a path on this server)."""
    moved = dict(moves or {})

    class Handler(_handler(script)):  # type: ignore[misc, valid-type]
        def _watch(self) -> str | None:
            """Record the request; the Location to send it to, if it is moved."""
            seen.append(Seen(self.command, self.path, dict(self.headers)))
            return moved.get(self.path)

        def _move(self, location: str) -> None:
            self._send((status, {"error": {"message": f"moved to {location}"}}, {"Location": location}))

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            location = self._watch()
            if location is None:
                super().do_GET()
            else:
                self._move(location)

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            location = self._watch()
            if location is None:
                super().do_POST()
            else:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._move(location)

    with serve(Handler) as url:
        yield url
