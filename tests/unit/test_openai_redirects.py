"""Redirects from an OpenAI-compatible endpoint: the API key never reaches another host, a redirect to
another host is refused with both hosts named, and one on the same host is followed with the key."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import pytest

from pytest_safeedit.backends import openai as openai_backend
from pytest_safeedit.backends.base import GenerationError, Request
from pytest_safeedit.backends.openai import EndpointError, EndpointSettings, OpenAIGenerator
from pytest_safeedit.config.settings import GenerationSettings
from tests.fake_server import Script, Seen, watched_server

GREEDY = GenerationSettings(max_new_tokens=7)
KEY = "sk-very-secret"


def make(url: str, *, key: bool = True) -> OpenAIGenerator:
    endpoint = EndpointSettings(url=url, model="served-model", retries=1, api_key_env="MY_SERVER_KEY" if key else None)
    return OpenAIGenerator(endpoint, sleep=lambda s: None)


def host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def error_from(call: Callable[[], object]) -> str:
    """What the call raised, or "" where it raised nothing."""
    try:
        call()
    except (EndpointError, GenerationError) as exc:
        return str(exc)
    return ""


def credentials(seen: list[Seen]) -> list[str]:
    return [value for s in seen for name, value in s.headers.items() if name.lower() == "authorization"]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("key", [True, False], ids=["with-key", "without-key"])
def test_a_model_listing_redirected_to_another_host_is_refused_without_the_key(
    monkeypatch: pytest.MonkeyPatch, status: int, key: bool
) -> None:
    monkeypatch.setenv("MY_SERVER_KEY", KEY)
    elsewhere: list[Seen] = []
    here: list[Seen] = []
    with watched_server(Script(), elsewhere) as other:
        with watched_server(Script(), here, moves={"/v1/models": other + "/models"}, status=status) as url:
            message = error_from(lambda: make(url, key=key))
    assert credentials(elsewhere) == []
    assert credentials(here) == ([f"Bearer {KEY}"] if key else [])
    assert elsewhere == []
    assert f"{url}/models redirected (HTTP {status}) to {other}/models, on another host" in message
    assert f"({host(url)} -> {host(other)})" in message and f"give --safeedit-endpoint {other}" in message
    assert KEY not in message


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_chat_completion_redirected_to_another_host_is_refused_without_the_key(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("MY_SERVER_KEY", KEY)
    elsewhere: list[Seen] = []
    here: list[Seen] = []
    with watched_server(Script(), elsewhere) as other:
        moves = {"/v1/chat/completions": other + "/chat/completions"}
        with watched_server(Script(), here, moves=moves, status=status) as url:
            generator = make(url)
            message = error_from(lambda: generator.generate([Request("x", None, GREEDY)]))
    assert credentials(elsewhere) == []
    assert credentials(here) == [f"Bearer {KEY}"] * 2
    assert elsewhere == []
    assert "another host" in message and host(url) in message and host(other) in message


def test_a_redirect_on_the_same_host_is_followed_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVER_KEY", KEY)
    seen: list[Seen] = []
    with watched_server(Script(), seen, moves={"/old/models": "/v1/models"}) as url:
        base = url.removesuffix("/v1") + "/old"
        assert make(base).generate([Request("x", None, GREEDY)]) == ["echo: x"]
    assert [(s.method, s.path) for s in seen] == [
        ("GET", "/old/models"),
        ("GET", "/v1/models"),
        ("POST", "/old/chat/completions"),
    ]
    assert credentials(seen) == [f"Bearer {KEY}"] * 3


@pytest.mark.parametrize(
    ("old", "new", "follow"),
    [
        ("http://h:8000/v1/models", "http://h:8000/v2/models", True),
        ("http://H:8000/v1/models", "http://h:8000/v2/models", True),
        ("http://h/v1/models", "https://h/v1/models", True),
        ("http://h:80/v1/models", "https://h:443/v1/models", True),
        ("http://h:8000/v1/models", "http://h:8001/v1/models", False),
        ("http://h:8000/v1/models", "http://g:8000/v1/models", False),
        ("http://h:8000/v1/models", "https://h:8000/v1/models", False),
        ("https://h/v1/models", "http://h/v1/models", False),
        ("https://h/v1/models", "https://h.evil.example/v1/models", False),
    ],
)
def test_which_redirects_may_be_followed(old: str, new: str, follow: bool) -> None:
    assert openai_backend.may_follow_redirect(old, new) is follow
