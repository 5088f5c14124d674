"""The editor registry: built-in editors, editors from the ``pytest_safeedit_editors`` hook, config files,
and the chosen editor per suite."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_safeedit.cases.model import Suite
from pytest_safeedit.editors.base import NONE, Editor, EditorConfigError, EditorSpec, editor_section, validate_hparams


def builtin_editors() -> list[EditorSpec]:
    from pytest_safeedit.editors.dinm import DINM_SPEC, FTL_SPEC
    from pytest_safeedit.editors.reminder import SELF_REMINDER_SPEC
    from pytest_safeedit.editors.routed import ROUTED_SPEC

    return [DINM_SPEC, FTL_SPEC, ROUTED_SPEC, SELF_REMINDER_SPEC]


def editor_registry(config: pytest.Config) -> dict[str, EditorSpec]:
    """Every editor by name: the built-ins, then those plugins return from ``pytest_safeedit_editors``."""
    registry = {spec.name: spec for spec in builtin_editors()}
    for specs in config.hook.pytest_safeedit_editors(config=config):
        for spec in specs or []:
            if not isinstance(spec, EditorSpec):
                raise pytest.UsageError(
                    f"pytest_safeedit_editors returned {spec!r}; return a list of pytest_safeedit.editors.base.EditorSpec"
                )
            if spec.name in registry or spec.name == NONE:
                raise pytest.UsageError(f"two editors are named {spec.name!r}; give the plugin's editor another name")
            registry[spec.name] = spec
    return registry


def choose_editor(
    config: pytest.Config, name: str, config_file: str | None
) -> tuple[EditorSpec | None, dict[str, Any]]:
    """The selected editor and the validated hyperparameters of its config file (usage errors otherwise)."""
    registry = editor_registry(config)
    if name == NONE:
        if config_file:
            raise pytest.UsageError("--safeedit-editor-config was given without --safeedit-editor; choose an editor")
        return None, {}
    if name not in registry:
        known = ", ".join([NONE, *sorted(registry)])
        raise pytest.UsageError(f"--safeedit-editor: unknown editor {name!r}; known editors: {known}")
    spec = registry[name]
    if not config_file:
        return spec, {}
    path = Path(config_file)
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise pytest.UsageError(f"--safeedit-editor-config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise pytest.UsageError(f"--safeedit-editor-config: {path} is not valid YAML: {exc}") from None
    try:
        return spec, validate_hparams(spec, editor_section(data, name, str(path)), str(path))
    except EditorConfigError as exc:
        raise pytest.UsageError(f"--safeedit-editor-config: {exc}") from None


class SuiteEditors:
    """The chosen editor, built once per suite with that suite's hyperparameters: the editor's defaults
    < the model's own (the demo model's tuning) < the suite's ``defaults: editor:`` < the config file's."""

    def __init__(
        self,
        spec: EditorSpec | None,
        config: Mapping[str, Any] | None = None,
        model_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.config = dict(config or {})
        self.model_defaults = dict(model_defaults or {})
        self._editors: dict[str, Editor] = {}
        self._hparams: dict[str, dict[str, Any]] = {}

    @property
    def name(self) -> str:
        return NONE if self.spec is None else self.spec.name

    def for_suite(self, suite: Suite) -> Editor | None:
        """The editor for ``suite`` (None without an editor); raises EditorConfigError for a bad section."""
        spec = self.spec
        if spec is None:
            return None
        if suite.key not in self._editors:
            source = f"{suite.path}: defaults.editor"
            hparams = dict(spec.defaults)
            hparams.update(self.model_defaults)
            hparams.update(
                validate_hparams(spec, editor_section(suite.defaults.get("editor"), spec.name, source), source)
            )
            hparams.update(self.config)
            self._hparams[suite.key] = hparams
            self._editors[suite.key] = spec.factory(**hparams)
        return self._editors[suite.key]

    def hyperparameters(self, suite: Suite | None = None) -> dict[str, Any]:
        """The hyperparameters in force for one suite, or for every suite by key."""
        if suite is not None:
            return dict(self._hparams.get(suite.key, {}))
        return {key: dict(value) for key, value in sorted(self._hparams.items())}
