"""pytest entry point of pytest-safeedit: hook implementations and fixtures only."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.baseline import KNOWN, BaselineError, load_baseline
from pytest_safeedit.categories import CATEGORIES, category_slug
from pytest_safeedit.collect import ProbeItem, SuiteFile, is_suite_file
from pytest_safeedit.editors import choose_editor
from pytest_safeedit.options import add_options, read_settings
from pytest_safeedit.reporter import SafeEditReporter
from pytest_safeedit.session import SafeEditSession
from pytest_safeedit.shard import select_shard
from pytest_safeedit.stash import baseline_key, session_key, settings_key, suite_errors_key, suite_gates_key
from pytest_safeedit.workers import worker_lookahead


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_safeedit import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    settings = read_settings(config)
    config.stash[settings_key] = settings
    editor_spec, editor_config = choose_editor(config, settings.editor, settings.editor_config)
    session = SafeEditSession(settings, editor_spec, editor_config)
    workerinput = getattr(config, "workerinput", {})
    worker = workerinput.get("workerid", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        session.worker_index = int(worker[2:])
        session.worker_count = int(workerinput.get("workercount", 1))
    config.stash[session_key] = session
    config.stash[suite_errors_key] = set()
    config.stash[suite_gates_key] = {}
    if settings.baseline and not settings.update_baseline:
        try:
            config.stash[baseline_key] = load_baseline(settings.baseline)
        except BaselineError as exc:
            raise pytest.UsageError(f"--safeedit-baseline: {exc}") from None
    config.addinivalue_line("markers", "safeedit: a SafeEdit probe item")
    for category in CATEGORIES:
        config.addinivalue_line("markers", f"{category_slug(category)}: SafeEdit probes of category '{category}'")
    config.pluginmanager.register(SafeEditReporter(config), "safeedit-reporter")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if is_suite_file(file_path, config.stash[settings_key].suite_patterns, _named_paths(config)):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


def _named_paths(config: pytest.Config) -> set[Path]:
    root = config.invocation_params.dir
    out = set()
    for arg in config.args:
        out.add((root / arg.split("::")[0]).resolve())
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.stash[settings_key].shard
    if shard is not None:
        keep, drop = select_shard(items, *shard)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    for item in items:
        if isinstance(item, ProbeItem):
            slug = category_slug(item.case.category)
            config.addinivalue_line("markers", f"{slug}: SafeEdit probes of category '{item.case.category}'")


def pytest_collection_finish(session: pytest.Session) -> None:
    # After every plugin's selection (-k, -m, shards): only the items that will run are batched.
    config = session.config
    safeedit = config.stash[session_key]
    probe_items = [i for i in session.items if isinstance(i, ProbeItem)]
    for item in probe_items:
        safeedit.register(item.suite, item.case, item.probe.kind)
    if safeedit.enabled and hasattr(config, "workerinput"):
        safeedit.upcoming = worker_lookahead(config, session.items)
    elif safeedit.enabled:
        safeedit.expect([r for i in probe_items for r in i.requests()])


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    # A broken suite file is a collection error, but it must not stop the other files from running;
    # any other collection error keeps pytest's own behaviour.
    config = session.config
    broken_suites = len(config.stash[suite_errors_key])
    if broken_suites and session.testsfailed == broken_suites:
        config.option.continue_on_collection_errors = True
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if isinstance(item, ProbeItem) and call.when == "call" and item.result is not None:
        report.safeedit = item.result.to_dict()
        if item.result.baseline == KNOWN and report.failed:
            # Unsafe in the baseline too: a known failure, reported as xfail rather than hidden.
            report.outcome = "skipped"
            report.wasxfail = "known unsafe: also unsafe in the baseline"
    return report


@pytest.fixture(scope="session")
def safeedit_session(pytestconfig: pytest.Config) -> SafeEditSession:
    """The run's SafeEdit session: the model, the judge and batched generation for Python tests.

    Skips the test when no ``--safeedit-model`` was given.
    """
    session = pytestconfig.stash[session_key]
    if not session.enabled:
        pytest.skip("no model to test: pass --safeedit-model PATH_OR_ID (or 'demo')")
    return session
