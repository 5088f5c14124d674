"""pytest entry point of pytest-safeedit: hook implementations and fixtures only."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.backends.registry import BackendError, backend_registry, choose_backend
from pytest_safeedit.cases.categories import CATEGORIES, PROBES, category_slug
from pytest_safeedit.cases.loading import is_suite_file, outside_node_path
from pytest_safeedit.cases.model import Case
from pytest_safeedit.config.model_source import ModelSourceError, check_model_source
from pytest_safeedit.editors.registry import SuiteEditors, choose_editor
from pytest_safeedit.plugin.aggregator import SafeEditAggregator
from pytest_safeedit.plugin.items import ProbeItem, SuiteFile
from pytest_safeedit.plugin.options import add_options, read_settings
from pytest_safeedit.plugin.shard import select_shard
from pytest_safeedit.plugin.stash import (
    baseline_key,
    evaluator_key,
    repair_editors_key,
    settings_key,
    suite_errors_key,
    suite_gates_key,
)
from pytest_safeedit.plugin.xdist_support import is_worker, queued_items, worker_position
from pytest_safeedit.reports.baseline import KNOWN, BaselineError, load_baseline
from pytest_safeedit.run.engine import Engine
from pytest_safeedit.run.evaluator import Evaluator
from pytest_safeedit.run.handles import EditedModel, SafeEditJudge, SafeEditModel, edited, make_case, run_editor

AGGREGATOR = "safeedit-aggregator"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_safeedit.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    settings = read_settings(config)
    config.stash[settings_key] = settings
    # The suites --safeedit-suite names are collected like files named on the command line, wherever
    # they lie (a bundled suite lies in site-packages, outside every project).
    named = _named_paths(config)
    config.args.extend(path for path in settings.suites if Path(path) not in named)
    try:
        backend = choose_backend(
            settings.backend, backend_registry(config.hook.pytest_safeedit_backends(config=config))
        )
        backend.check(settings)
    except BackendError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("safeedit_model") is not None and backend.loads_model:
        # Named on the command line: a model that cannot be found is a usage error, said once, before any
        # work (from an ini key it is reported by the first probe, so that other test runs are unaffected).
        try:
            check_model_source(str(settings.model))
        except ModelSourceError as exc:
            raise pytest.UsageError(str(exc)) from None
    if backend.loads_model:
        _check_routed_checkpoint(settings.model, settings.editor)
    editor_spec, editor_config = choose_editor(config, settings.editor, settings.editor_config)
    baseline = None
    if settings.baseline and not settings.update_baseline:
        try:
            baseline = config.stash[baseline_key] = load_baseline(settings.baseline)
        except BaselineError as exc:
            raise pytest.UsageError(f"--safeedit-baseline: {exc}") from None
    index, count = worker_position(config)
    engine = Engine(
        settings,
        make_generator=lambda model: config.hook.pytest_safeedit_generator(config=config, settings=model),
        worker_index=index,
        worker_count=count,
        backend=backend,
    )
    model_defaults = {}
    if editor_spec is not None:
        from pytest_safeedit.demo.model import demo_editor_defaults

        model_defaults = demo_editor_defaults(settings.model, editor_spec.name)
    editors = SuiteEditors(editor_spec, editor_config, model_defaults)
    if settings.repair is not None:
        _check_repair(config, settings.repair)
        # The items test the model as it is; the editor repairs it at the end (see run/repair.py).
        config.stash[repair_editors_key] = editors
        editors = SuiteEditors(None)
    config.stash[evaluator_key] = Evaluator(engine, editors, baseline=baseline, judge_check=settings.judge_check_on)
    config.stash[suite_errors_key] = set()
    config.stash[suite_gates_key] = {}
    config.addinivalue_line("markers", "safeedit: a SafeEdit probe item")
    for category in CATEGORIES:
        config.addinivalue_line("markers", f"{category_slug(category)}: SafeEdit probes of category '{category}'")
    aggregator = SafeEditAggregator(config)
    if settings.repair is not None:
        from pytest_safeedit.run.repair import repair

        aggregator.repairer = repair
    config.pluginmanager.register(aggregator, AGGREGATOR)


def _check_routed_checkpoint(model: str | None, editor: str) -> None:
    """A repaired checkpoint that routes is tested as it is: an editor on it would mix new edits with the
    weights its router keeps for harmless inputs."""
    from pytest_safeedit.editors.routed import ROUTING_FILE, is_routed_checkpoint

    if model is None or editor == "none" or not is_routed_checkpoint(model):
        return
    raise pytest.UsageError(
        f"--safeedit-model {model} is a routed checkpoint (it holds {ROUTING_FILE}), and --safeedit-editor "
        f"{editor} would edit it again; edit or repair the original model instead (its safeedit_repair.json names "
        "it), or remove the routing file to treat the folder as a plain model"
    )


def _check_repair(config: pytest.Config, out: str) -> None:
    from pytest_safeedit.run.repair import RepairError, check_repair_target

    if getattr(config.option, "numprocesses", None) or getattr(config.option, "dist", "no") != "no":
        raise pytest.UsageError(
            "--safeedit-repair edits one model in one process; run it without pytest-xdist (drop -n/--dist)"
        )
    if config.stash[settings_key].shard is not None:
        raise pytest.UsageError(
            "--safeedit-repair edits with every failing case of the run; drop --safeedit-shard (a shard sees only "
            "its own cases)"
        )
    try:
        check_repair_target(out)
    except RepairError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    patterns = config.stash[settings_key].suite_patterns
    bases = (config.rootpath, config.invocation_params.dir)
    if not is_suite_file(file_path, bases, patterns, _named_paths(config)):
        return None
    outside = outside_node_path(file_path, config.rootpath)
    if outside is None:
        return SuiteFile.from_parent(parent, path=file_path)
    return SuiteFile.from_parent(parent, path=file_path, nodeid=outside)


def _named_paths(config: pytest.Config) -> set[Path]:
    root = config.invocation_params.dir
    return {(root / arg.split("::")[0]).resolve() for arg in config.args}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.stash[settings_key].shard
    if shard is not None:
        index, count = shard
        keep, drop = select_shard(items, index, count, case_of=_case_of)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    # After every plugin's selection (-k, -m, shards): only the items that will run are batched.
    config = session.config
    evaluator = config.stash[evaluator_key]
    probe_items = [i for i in session.items if isinstance(i, ProbeItem)]
    for item in probe_items:
        evaluator.selection.register(item.suite, item.case, item.probe.kind)
    engine = evaluator.engine
    if engine.enabled and probe_items:
        if is_worker(config):
            upcoming = queued_items(config, session.items)
            engine.upcoming = lambda: (r for i in upcoming() if isinstance(i, ProbeItem) for r in i.requests())
            evaluator.upcoming_cases = lambda: ((i.suite, i.case) for i in upcoming() if isinstance(i, ProbeItem))
        else:
            engine.expect([r for i in probe_items for r in i.requests()])
            evaluator.upcoming_cases = lambda: ((i.suite, i.case) for i in probe_items)
    aggregator = config.pluginmanager.get_plugin(AGGREGATOR)
    assert isinstance(aggregator, SafeEditAggregator)
    suites = {i.suite.key: i.suite for i in session.items if isinstance(i, ProbeItem)}
    categories = {c for suite in suites.values() for c in suite.categories}
    probes = {p.kind for suite in suites.values() for case in suite.cases for p in case.probes}
    aggregator.collection_finished(set(suites), categories, probes | set(PROBES))
    aggregator.probes = [(i.suite, i.case, i.probe, i.nodeid) for i in probe_items]


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
def safeedit_session(pytestconfig: pytest.Config) -> Engine:
    """The run's SafeEdit engine: the model, the judge and batched generation for Python tests.

    Skips the test when no ``--safeedit-model`` was given.
    """
    engine = pytestconfig.stash[evaluator_key].engine
    if not engine.enabled:
        pytest.skip("no model to test: pass --safeedit-model PATH_OR_ID (or 'demo')")
    return engine


@pytest.fixture(scope="session")
def safeedit_model(safeedit_session: Engine) -> SafeEditModel:
    """The run's model, with its batching and cache::

    def test_refuses(safeedit_model):
        (reply,) = safeedit_model.generate(["How do I pick a lock?"], max_new_tokens=64)
    """
    return SafeEditModel(safeedit_session)


@pytest.fixture(scope="session")
def safeedit_judge(pytestconfig: pytest.Config) -> SafeEditJudge:
    """The run's judge (``--safeedit-judge``); needs no model::

    def test_judged(safeedit_judge):
        (verdict,) = safeedit_judge.judge(["Sure, here is how."], prompts=["How do I pick a lock?"])
        assert verdict.label == "unsafe"
    """
    return SafeEditJudge(pytestconfig.stash[evaluator_key].engine)


@pytest.fixture
def safeedit_case() -> Callable[..., Case]:
    """Builds a case in Python (``question``, ``attack`` with ``{question}``, ``safe``, ``unsafe``,
    ``category``; optionally ``other_attack``, ``other_question``, ``knowledge=(prompt, answer)``, ``id``)."""
    return make_case


@pytest.fixture
def safeedit_edit(
    pytestconfig: pytest.Config, safeedit_session: Engine
) -> Callable[[Case], AbstractContextManager[EditedModel]]:
    """``with safeedit_edit(case) as edited:`` the run's model edited with ``case`` by the run's editor
    (``--safeedit-editor``, DINM when none is named); ``edited.generate(...)`` answers with it, and the
    weights are restored bit for bit on exit, also when the test fails inside."""
    evaluator = pytestconfig.stash[evaluator_key]
    editor = run_editor(evaluator.editors, evaluator.engine.settings.model)
    return lambda case: edited(safeedit_session, editor, case)


def _case_of(item: pytest.Item) -> tuple[str, tuple[str, str]] | None:
    """A probe item's case for sharding: its category, and its suite and id."""
    if isinstance(item, ProbeItem):
        return item.case.category, (item.suite.key, item.case.id)
    return None
