"""The openai backend against a scripted server on 127.0.0.1: what it sends, how it retries, and what
it says when the server misbehaves or is not there."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

from pytest_safeedit.backends import openai as openai_backend
from pytest_safeedit.backends.base import GenerationError, Request
from pytest_safeedit.backends.openai import EndpointError, EndpointSettings, OpenAIGenerator, check_endpoint_url
from pytest_safeedit.config.settings import GenerationSettings
from tests.fake_server import Answer, Script, completion, fake_server, reply_to

GREEDY = GenerationSettings(max_new_tokens=7)


def make(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> OpenAIGenerator:
    endpoint = EndpointSettings(url=url, model=kwargs.pop("model", "served-model"), **kwargs)
    recorded = sleeps if sleeps is not None else []
    return OpenAIGenerator(endpoint, seed=3, sleep=recorded.append)


def test_requests_carry_the_model_messages_and_greedy_settings() -> None:
    script = Script()
    with fake_server(script) as url:
        generator = make(url)
        out = generator.generate([Request("hello", None, GREEDY), Request("hi", "Be safe.", GREEDY)])
    assert out == ["echo: hello", "echo: hi"]
    bodies = sorted(script.requests, key=lambda b: b["messages"][-1]["content"])
    assert bodies[0]["messages"] == [{"role": "user", "content": "hello"}]
    assert bodies[1]["messages"] == [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "hi"}]
    for body in bodies:
        assert body["model"] == "served-model"
        assert (body["max_tokens"], body["temperature"], body["seed"], body["stream"]) == (7, 0.0, 3, False)


def test_sampled_requests_send_temperature_top_p_and_a_seed_per_sample() -> None:
    script = Script()
    sampled = GenerationSettings(max_new_tokens=5, decoding="sample", samples=2, temperature=0.7, top_p=0.9)
    with fake_server(script) as url:
        make(url).generate([Request("q", None, sampled, sample=0), Request("q", None, sampled, sample=1)])
    seeds = sorted(b["seed"] for b in script.requests)
    assert seeds[1] == seeds[0] + 1
    assert {(b["temperature"], b["top_p"]) for b in script.requests} == {(0.7, 0.9)}


def test_429_and_5xx_are_retried_with_backoff_and_retry_after() -> None:
    calls: list[int] = []

    def flaky(body: dict[str, Any]) -> Answer:
        calls.append(1)
        if len(calls) == 1:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "2"}
        if len(calls) == 2:
            return 503, {"error": {"message": "busy"}}, {}
        return 200, completion(reply_to(body)), {}

    sleeps: list[float] = []
    with fake_server(Script(chat=flaky)) as url:
        assert make(url, sleeps).generate([Request("x", None, GREEDY)]) == ["echo: x"]
    assert len(calls) == 3
    assert sleeps[0] == 2.0  # Retry-After honoured
    assert 0.5 <= sleeps[1] <= 1.5  # then exponential backoff with jitter


NOW = datetime(2026, 12, 7, 9, 30, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("600", openai_backend.MAX_BACKOFF_S),
        ("Mon, 07 Dec 2026 09:30:12 GMT", 12.0),
        ("Mon, 07 Dec 2026 09:30:12 -0000", 12.0),
        ("Mon, 07 Dec 2026 10:30:12 +0100", 12.0),
        ("Mon, 07 Dec 2026 09:29:00 GMT", 0.0),
        ("Mon, 07 Dec 2026 11:00:00 GMT", openai_backend.MAX_BACKOFF_S),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds_and_as_an_http_date(value: str | None, delay: float | None) -> None:
    assert openai_backend._retry_after(value, now=NOW) == delay


@pytest.mark.parametrize(("ahead_s", "low", "high"), [(3600, 30.0, 30.0), (-60, 0.0, 0.0), (20, 17.0, 20.0)])
def test_a_retry_after_date_from_the_server_sets_the_wait(ahead_s: int, low: float, high: float) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=ahead_s), usegmt=True)
    calls: list[int] = []

    def busy_once(body: dict[str, Any]) -> Answer:
        calls.append(1)
        if len(calls) == 1:
            return 503, {"error": {"message": "busy"}}, {"Retry-After": when}
        return 200, completion(reply_to(body)), {}

    sleeps: list[float] = []
    with fake_server(Script(chat=busy_once)) as url:
        assert make(url, sleeps).generate([Request("x", None, GREEDY)]) == ["echo: x"]
    assert len(sleeps) == 1 and low <= sleeps[0] <= high


def test_retries_run_out_with_the_status_and_the_servers_message() -> None:
    script = Script(chat=lambda body: (500, {"error": {"message": "CUDA out of memory"}}, {}))
    with fake_server(script) as url:
        with pytest.raises(GenerationError, match=r"HTTP 500 \(after 3 attempts\): CUDA out of memory"):
            make(url, retries=2).generate([Request("x", None, GREEDY)])
    assert len(script.requests) == 3


def test_a_4xx_is_not_retried_and_quotes_the_server() -> None:
    script = Script(chat=lambda body: (400, {"error": {"message": "prompt is longer than 2048 tokens"}}, {}))
    with fake_server(script) as url:
        with pytest.raises(GenerationError, match="HTTP 400: prompt is longer than 2048 tokens"):
            make(url).generate([Request("x", None, GREEDY)])
    assert len(script.requests) == 1


def test_the_api_key_is_sent_as_a_bearer_token_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVER_KEY", "sk-very-secret")
    script = Script(chat=lambda body: (401, {"error": {"message": "bad key"}}, {}))
    with fake_server(script) as url:
        generator = make(url, api_key_env="MY_SERVER_KEY", revision="r1")
        with pytest.raises(GenerationError) as excinfo:
            generator.generate([Request("x", None, GREEDY)])
    assert script.headers[0]["Authorization"] == "Bearer sk-very-secret"
    assert "MY_SERVER_KEY" in str(excinfo.value) and "sk-very-secret" not in str(excinfo.value)
    assert "sk-very-secret" not in repr(generator.metadata()) + str(generator.identity())


def test_a_missing_key_variable_is_said() -> None:
    with fake_server(Script()) as url:
        with pytest.raises(EndpointError, match="NO_SUCH_KEY_VAR .* is not set"):
            make(url, api_key_env="NO_SUCH_KEY_VAR")


def test_a_request_slower_than_the_timeout_fails_with_the_timeout() -> None:
    with fake_server(Script(delay_s=1.5)) as url:
        generator = make(url, timeout=0.3, retries=1)
        with pytest.raises(GenerationError, match=r"no answer within 0.3 s"):
            generator.generate([Request("x", None, GREEDY)])


def test_a_dropped_connection_is_retried() -> None:
    calls: list[int] = []

    def drop_first(body: dict[str, Any]) -> Answer:
        calls.append(1)
        return None if len(calls) == 1 else (200, completion("fine"), {})

    with fake_server(Script(chat=drop_first)) as url:
        assert make(url).generate([Request("x", None, GREEDY)]) == ["fine"]
    assert len(calls) == 2


def test_partial_failure_keeps_the_answers_that_came_back() -> None:
    def half(body: dict[str, Any]) -> Answer:
        text = body["messages"][-1]["content"]
        return (400, {"error": {"message": "no"}}, {}) if text == "bad" else (200, completion(text), {})

    with fake_server(Script(chat=half)) as url:
        with pytest.raises(GenerationError) as excinfo:
            make(url, concurrency=3).generate([Request(t, None, GREEDY) for t in ("a", "bad", "c")])
    assert excinfo.value.partial == ["a", None, "c"]


def test_a_server_that_is_not_there_is_said_before_any_probe() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EndpointError, match=r"connection refused .*start the server or fix --safeedit-endpoint"):
        make(f"http://127.0.0.1:{port}/v1", retries=1)


def test_a_model_the_server_does_not_serve_is_said() -> None:
    with fake_server(Script(models=["a", "b"])) as url:
        with pytest.raises(EndpointError, match=r"does not serve 'served-model' \(it serves: a, b\)"):
            make(url)


def test_cache_identity_needs_a_revision_and_names_the_model_not_the_endpoint() -> None:
    with fake_server(Script()) as one, fake_server(Script()) as two:
        assert make(one).identity() is None
        assert "cache_off" in make(one).metadata()
        assert make(one, revision="v1").identity() == make(two, revision="v1").identity()
        assert make(one, revision="v1").identity() != make(one, revision="v2").identity()


def test_editing_is_refused_with_the_backend_to_use() -> None:
    with fake_server(Script()) as url:
        with pytest.raises(RuntimeError, match="--safeedit-backend hf"):
            make(url).editable(GREEDY)


@pytest.mark.parametrize(
    ("url", "base"),
    [("http://h:1", "http://h:1/v1"), ("http://h:1/v1/", "http://h:1/v1"), ("https://h/api/v2", "https://h/api/v2")],
)
def test_api_base(url: str, base: str) -> None:
    assert EndpointSettings(url=url, model="m").base == base


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://h/v1", "http:///v1", ""])
def test_bad_endpoint_urls(url: str) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        check_endpoint_url(url)


def test_prompts_sharing_a_template_are_sent_one_after_another() -> None:
    script = Script()
    texts = ["ATTACK B: q1", "bare q", "ATTACK A: q2", "ATTACK B: q2", "ATTACK A: q1"]
    with fake_server(script) as url:
        out = make(url, concurrency=1).generate([Request(t, None, GREEDY) for t in texts])
    assert out == [f"echo: {t}" for t in texts]  # in the requests' order
    sent = [b["messages"][-1]["content"] for b in script.requests]
    assert sent == ["ATTACK A: q1", "ATTACK A: q2", "ATTACK B: q1", "ATTACK B: q2", "bare q"]
