"""A generator that asks an OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, llama.cpp
server, Ollama, ``transformers serve``) instead of loading weights into this process.

Plain HTTP from the standard library: one POST per request, ``concurrency`` of them in flight, each
with a timeout; 429, 5xx, timeouts and dropped connections are retried with backoff (honouring
``Retry-After``, in seconds or as a date), other 4xx answers are errors that quote the server. The API
key is read from an environment variable and goes only into the ``Authorization`` header, and only to
the endpoint's own host: a redirect to another host is refused.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

from pytest_safeedit.backends.base import GenerationError, Request, decoding_options, prefix_order

#: HTTP statuses worth trying again: rate limiting and server-side trouble.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointError(Exception):
    """A request to the endpoint failed for good (after any retries)."""


class RedirectRefused(EndpointError):
    """The endpoint redirected a request to another host, where neither the key nor the probes go."""


@dataclass(frozen=True)
class EndpointSettings:
    """Where and how to reach a served model.

    Args:
        url: the API base, e.g. ``http://127.0.0.1:8000/v1`` (a URL with no path gets ``/v1``).
        model: the served model's id, sent as ``model`` in every request.
        revision: what the weights behind the id are (a tag the user gives); None turns the cache off.
        concurrency: requests in flight at once.
        timeout: seconds one request may take.
        retries: further attempts after a retryable failure.
        api_key_env: name of the environment variable that holds the API key (None: no key).
    """

    url: str
    model: str
    revision: str | None = None
    concurrency: int = 8
    timeout: float = 300.0
    retries: int = 4
    api_key_env: str | None = None

    @property
    def base(self) -> str:
        parts = urllib.parse.urlsplit(self.url.rstrip("/"))
        path = parts.path or "/v1"
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def check_endpoint_url(url: str) -> str:
    """The URL if it can be an API base (http or https with a host), else a ValueError saying why."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL with a host; give e.g. http://127.0.0.1:8000/v1")
    return url.strip()


def may_follow_redirect(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` stays on the same server, so that the request may carry
    the API key there: the same scheme, host and port, or the same host moving from http on port 80 to
    https on port 443."""
    was, now = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if was.scheme not in DEFAULT_PORTS or now.scheme not in DEFAULT_PORTS:
        return False
    try:
        was_port = was.port or DEFAULT_PORTS[was.scheme]
        now_port = now.port or DEFAULT_PORTS[now.scheme]
    except ValueError:  # a port that is not a number
        return False
    if not was.hostname or was.hostname != now.hostname:
        return False
    if (was.scheme, was_port) == (now.scheme, now_port):
        return True
    return (was.scheme, was_port, now.scheme, now_port) == ("http", 80, "https", 443)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where :func:`may_follow_redirect` allows it. urllib copies every header,
    ``Authorization`` included, onto the redirected request, and the probes belong to the server the user
    named, so a redirect to another host is an error that names both hosts."""

    def __init__(self, base: str) -> None:
        self.base = base

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if may_follow_redirect(req.full_url, newurl):
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        fp.close()
        old_host = urllib.parse.urlsplit(req.full_url).netloc
        new_host = urllib.parse.urlsplit(newurl).netloc or "?"
        path = req.full_url.removeprefix(self.base)
        if path != req.full_url and path and newurl.endswith(path):
            todo = f"if {new_host} is the server to use, give --safeedit-endpoint {newurl.removesuffix(path)}"
        else:
            todo = f"if {new_host} is the server to use, give its API base with --safeedit-endpoint"
        raise RedirectRefused(
            f"{req.full_url} redirected (HTTP {code}) to {newurl}, on another host ({old_host} -> {new_host}); "
            f"the request and its API key are not sent to another host: {todo}"
        )


class OpenAIGenerator:
    """Answers requests through an OpenAI-compatible ``/chat/completions`` endpoint.

    Greedy decoding is sent as temperature 0 with the run's seed; sampled decoding sends the suite's
    temperature and top-p and a seed per probe and sample. The server applies its own chat template.
    """

    backend = "openai"

    def __init__(
        self,
        endpoint: EndpointSettings,
        *,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.seed = seed
        self._sleep = sleep
        self._down: str | None = None
        self._lock = threading.Lock()
        self._key: str | None = None
        self._opener = urllib.request.build_opener(_SameHostRedirects(endpoint.base))
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise EndpointError(
                    f"the environment variable {endpoint.api_key_env} (--safeedit-api-key-env) is not set; "
                    "export the API key under that name"
                )
            self._key = key
        self._check_model()

    # ------------------------------------------------------------------ the seam

    def identity(self) -> str | None:
        """The served model's id and the revision the user named; None (no caching) without a revision,
        since the weights behind an id can change without the id changing."""
        if self.endpoint.revision is None:
            return None
        from pytest_safeedit.util.cache import digest

        return digest(self.backend, self.endpoint.model, self.endpoint.revision)

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One response per request; raises :class:`GenerationError` with the responses that did come
        back when any request failed for good."""
        results: list[str | None] = [None] * len(requests)
        errors: list[str | None] = [None] * len(requests)

        def one(index: int) -> None:
            try:
                results[index] = self._complete(requests[index])
            except EndpointError as exc:
                errors[index] = str(exc)

        # Sent in text order: requests that share an attack template go out together, for the server's
        # prefix cache.
        order = prefix_order(requests)
        workers = max(1, min(self.endpoint.concurrency, len(requests)))
        if workers == 1:
            for i in order:
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safeedit-openai") as pool:
                list(pool.map(one, order))
        failed = [e for e in errors if e is not None]
        if failed:
            raise GenerationError(failed[0], results)
        return [r for r in results if r is not None]

    def editable(self, settings: Any) -> Any:
        raise RuntimeError(
            "editing needs the model's weights in this process; the openai backend only talks to a server. "
            "Use --safeedit-backend hf with the model's folder or hub id to run an editor"
        )

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "endpoint": self.endpoint.base,
            "served_model": self.endpoint.model,
            "model_revision": self.endpoint.revision,
            "concurrency": self.endpoint.concurrency,
            "request_timeout_s": self.endpoint.timeout,
            "retries": self.endpoint.retries,
        }
        if self.endpoint.revision is None:
            out["cache_off"] = "served model without --safeedit-model-revision: its weights are not visible"
        return out

    # ------------------------------------------------------------------ HTTP

    def _check_model(self) -> None:
        """Ask the server which models it serves: a server that is not there, or one that does not serve
        the model, is said before any probe runs."""
        try:
            listing = self._call("GET", "/models", None)
        except RedirectRefused:
            raise
        except EndpointError as exc:
            raise EndpointError(f"{exc}; start the server or fix --safeedit-endpoint") from None
        served = [str(m.get("id")) for m in listing.get("data", []) if isinstance(m, dict)]
        if served and self.endpoint.model not in served:
            shown = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise EndpointError(
                f"{self.endpoint.base} does not serve {self.endpoint.model!r} (it serves: {shown}); "
                "give one of these with --safeedit-model"
            )

    def _body(self, request: Request) -> dict[str, Any]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.text})
        settings = request.settings
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "max_tokens": settings.max_new_tokens,
            "stream": False,
        }
        body.update(decoding_options(request, greedy_seed=self.seed))
        return body

    def _complete(self, request: Request) -> str:
        reply = self._call("POST", "/chat/completions", self._body(request))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(
                f"{self.endpoint.base}/chat/completions answered without choices[0].message.content: "
                f"{json.dumps(reply)[:300]}"
            ) from None
        return "" if content is None else str(content)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One API call with retries; the decoded JSON answer, or EndpointError."""
        url = self.endpoint.base + path
        if self._down is not None:
            raise EndpointError(self._down)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        attempt = 0
        while True:
            delay: float | None = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method=method)
                with self._opener.open(req, timeout=self.endpoint.timeout) as answer:
                    payload = answer.read()
                try:
                    decoded = json.loads(payload.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise EndpointError(f"{url} answered with something that is not JSON: {payload[:200]!r}") from None
                if not isinstance(decoded, dict):
                    raise EndpointError(f"{url} answered with JSON that is not an object: {payload[:200]!r}")
                return decoded
            except urllib.error.HTTPError as exc:
                message = _server_message(exc)
                if exc.code not in RETRY_STATUSES or attempt >= self.endpoint.retries:
                    hint = _status_hint(exc.code, self.endpoint.api_key_env)
                    tried = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise EndpointError(f"{url} answered HTTP {exc.code}{tried}: {message}{hint}") from None
                delay = _retry_after(exc.headers.get("Retry-After"))
            except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as exc:
                cause = _connection_cause(exc, self.endpoint.timeout)
                if attempt >= self.endpoint.retries:
                    text = f"{url} failed after {attempt + 1} attempts: {cause}"
                    if _unreachable(exc):
                        with self._lock:
                            # The server is gone: the remaining requests say so at once instead of waiting.
                            self._down = f"{self.endpoint.base} is not reachable: {cause}"
                    raise EndpointError(text) from None
            attempt += 1
            if delay is None:
                delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random())
            self._sleep(min(delay, MAX_BACKOFF_S))


def _server_message(exc: urllib.error.HTTPError) -> str:
    """The server's own words from an error answer (OpenAI's ``error.message`` where it is there)."""
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only a courtesy
        raw = ""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return " ".join(str(error).split())[:500]
    return " ".join(raw.split())[:500] or str(exc.reason)


def _status_hint(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        where = f"the variable {api_key_env}" if api_key_env else "--safeedit-api-key-env (none given)"
        return f"; check the API key in {where}"
    if status == 404:
        return "; check --safeedit-endpoint (the API base, e.g. http://HOST:PORT/v1) and --safeedit-model"
    return ""


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, given as seconds or as an HTTP date, within
    0 and :data:`MAX_BACKOFF_S`; None where there is no header or it cannot be read."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(MAX_BACKOFF_S, max(0.0, seconds))


def _unreachable(exc: BaseException) -> bool:
    """Whether a connection failure means nothing listens there (refused, or the host unknown), as
    opposed to a server that is slow or dropped one connection."""
    return isinstance(getattr(exc, "reason", exc), (ConnectionRefusedError, socket.gaierror))


def _connection_cause(exc: BaseException, timeout: float) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s (--safeedit-request-timeout)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(reason, socket.gaierror):
        return f"could not resolve the host ({reason})"
    if isinstance(exc, http.client.RemoteDisconnected) or isinstance(reason, ConnectionResetError):
        return "the server closed the connection"
    return f"{type(reason).__name__}: {reason}"
