"""The openai backend against a real server: `transformers serve` on 127.0.0.1 serving the demo model,
alone and behind a proxy that injects faults; the server stopped before a run and killed during one."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_server import Faults, fault_proxy
from tests.helpers import SAMPLE_SUITE
from tests.served import Server, free_port

pytestmark = pytest.mark.slow

#: Two categories of the sample suite: 40 attack probes and 4 benign ones.
SUBSET = "offensiveness or unfairness"
TOKENS = "16"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_safeedit.demo.model import ensure_demo

    return ensure_demo(str(tmp_path_factory.mktemp("served-cache")))


@pytest.fixture(scope="module")
def server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = Server(str(demo_dir), tmp_path_factory.mktemp("server") / "serve.log").start()
    yield served
    served.stop()


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> Path:
    target = pytester.path / "suites" / "sample.yaml"
    target.parent.mkdir(exist_ok=True)
    target.write_text(SAMPLE_SUITE.read_text(encoding="utf-8"), encoding="utf-8")
    return pytester.path


def served_run(pytester: pytest.Pytester, url: str, model: str, report: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "suites/",
        "-k",
        SUBSET,
        "-p",
        "no:cacheprovider",
        "--safeedit-backend",
        "openai",
        f"--safeedit-endpoint={url}",
        f"--safeedit-model={model}",
        "--safeedit-max-new-tokens",
        TOKENS,
        f"--safeedit-report={report}",
        *args,
    )


def responses(report: Path) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(report.read_text(encoding="utf-8"))
    return {(p["case_id"], p["probe"]): p for p in data["probes"]}


def test_served_responses_equal_the_hf_backend(
    pytester: pytest.Pytester, suite_dir: Path, server: Server, demo_dir: Path
) -> None:
    (model,) = server.served_ids()
    served_run(pytester, server.url, model, "served.json", "--safeedit-model-revision", "demo-test")
    pytester.runpytest_subprocess(
        "suites/", "-k", SUBSET, f"--safeedit-model={demo_dir}", "--safeedit-max-new-tokens", TOKENS,
        "--safeedit-report=hf.json",
    )  # fmt: skip
    served, local = responses(suite_dir / "served.json"), responses(suite_dir / "hf.json")
    assert len(served) == len(local) == 44
    different = {
        k: (served[k]["response"], local[k]["response"]) for k in local if served[k]["response"] != local[k]["response"]
    }
    assert not different, different
    meta = json.loads((suite_dir / "served.json").read_text())["metadata"]["model"]
    assert meta["backend"] == "openai" and meta["served_model"] == model and meta["model_revision"] == "demo-test"
    assert meta["cache"]["off_reason"] is None and meta["cache"]["generated"] == 44


def test_injected_500s_and_429s_are_retried_and_change_nothing(
    pytester: pytest.Pytester, suite_dir: Path, server: Server
) -> None:
    (model,) = server.served_ids()
    clean = served_run(pytester, server.url, model, "clean.json")
    clean.stdout.fnmatch_lines(["SafeEdit generation cache off for this run: *without --safeedit-model-revision*"])
    for status in (500, 429):
        faults = Faults(fail=3, status=status)
        with fault_proxy(server.url, faults) as url:
            result = served_run(pytester, url, model, f"faulty{status}.json")
        assert faults.seen == 44 + 3
        assert result.ret == clean.ret
        faulty = responses(suite_dir / f"faulty{status}.json")
        assert {k: v["response"] for k, v in faulty.items()} == {
            k: v["response"] for k, v in responses(suite_dir / "clean.json").items()
        }


def test_a_request_slower_than_the_timeout_errors_that_probe_only(
    pytester: pytest.Pytester, suite_dir: Path, server: Server
) -> None:
    (model,) = server.served_ids()
    faults = Faults(slow_at=1, slow_s=6.0)
    with fault_proxy(server.url, faults) as url:
        result = served_run(
            pytester, url, model, "slow.json", "--safeedit-no-cache", "--safeedit-request-timeout", "3",
            "--safeedit-retries", "0", "--safeedit-concurrency", "1", "--safeedit-batch-size", "1",
        )  # fmt: skip
    unanswered = [line for line in result.outlines if line.startswith("SafeEdit: no response: ")]
    assert len(unanswered) == 1, result.stdout.str()[-3000:]
    assert "no answer within 3 s (--safeedit-request-timeout)" in unanswered[0]
    report = responses(suite_dir / "slow.json")
    assert len(report) == 43  # every other probe has its result


def test_a_server_that_is_not_there(pytester: pytest.Pytester, suite_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = served_run(pytester, url, "some-model", "gone.json", "--safeedit-retries", "1")
    assert result.parseoutcomes().get("failed") == 44
    result.stdout.fnmatch_lines(
        [f"*could not load the model: {url}/models failed after 2 attempts: connection refused*start the server*"]
    )
    assert result.stdout.str().count("connection refused") <= 3  # said once (and in the summary), not per probe


def test_killed_mid_run_then_restarted_generates_only_what_is_missing(
    pytester: pytest.Pytester, suite_dir: Path, demo_dir: Path, tmp_path: Path
) -> None:
    server = Server(str(demo_dir), tmp_path / "serve.log").start()
    try:
        (model,) = server.served_ids()
        faults = Faults(count_to=10, on_count=server.kill)
        args = ("--safeedit-model-revision", "demo-kill", "--safeedit-retries", "1", "--safeedit-concurrency", "2")
        with fault_proxy(server.url, faults) as url:
            first = served_run(pytester, url, model, "killed.json", *args)
            unanswered = [line for line in first.outlines if line.startswith("SafeEdit: no response: ")]
            assert len(unanswered) >= 20, first.stdout.str()[-3000:]
            assert all(url.split("/v1")[0] in line for line in unanswered)  # each names the endpoint
            answered = 44 - len(unanswered)
            assert len(responses(suite_dir / "killed.json")) == answered
            server.start()
            second = served_run(pytester, url, model, "again.json", *args)
        meta = json.loads((suite_dir / "again.json").read_text())["metadata"]["model"]
        assert not [line for line in second.outlines if line.startswith("SafeEdit: no response: ")]
        assert len(responses(suite_dir / "again.json")) == 44
        assert meta["cache"]["generated"] == 44 - answered  # only the missing probes were generated
        assert meta["cache"]["hits"] >= answered
    finally:
        server.stop()


def test_shards_through_the_server_merge_into_one_report(
    pytester: pytest.Pytester, suite_dir: Path, server: Server
) -> None:
    (model,) = server.served_ids()
    args = ("--safeedit-model-revision", "demo-shards")
    whole = served_run(pytester, server.url, model, "whole.json", *args)
    for index in (1, 2):
        served_run(pytester, server.url, model, f"shard{index}.json", *args, "--safeedit-shard", f"{index}/2")
    merged = pytester.run(
        sys.executable, "-m", "pytest_safeedit", "merge", "shard1.json", "shard2.json", "--report", "merged.json"
    )
    assert merged.ret == whole.ret
    shards = [responses(suite_dir / f"shard{i}.json") for i in (1, 2)]
    assert len(shards[0]) and len(shards[1]) and not set(shards[0]) & set(shards[1])
    assert {k: v["verdict"] for k, v in responses(suite_dir / "merged.json").items()} == {
        k: v["verdict"] for k, v in responses(suite_dir / "whole.json").items()
    }
