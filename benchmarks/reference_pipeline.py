"""Baseline for the DINM benchmark: the pipeline as the public reference implementation runs it.

Per case, one at a time: the unedited model answers the five probes one by one, one DINM edit, the edited
model answers the five probes one by one (with the suffix), restore. No batching, no cache. The edit is
this project's DINM with the same hyperparameters, so the verdicts must equal the plugin's.

Usage: python benchmarks/reference_pipeline.py MODEL SUITE MAX_NEW_TOKENS OUT.json [-k SUBSTRING]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pytest_safeedit.backends.hf import load_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Suite
from pytest_safeedit.config.settings import ModelSettings
from pytest_safeedit.demo.model import demo_editor_defaults
from pytest_safeedit.editors.base import validate_hparams
from pytest_safeedit.editors.dinm import DINM, DINM_SPEC
from pytest_safeedit.judges.refusal import RefusalJudge
from pytest_safeedit.util.cache import cache_root


def suite_dinm(model_path: str, suite: Suite, **overrides: Any) -> DINM:
    """DINM with the hyperparameters the plugin would use: the editor's defaults, the demo model's tuning
    (when this is the demo), the suite's, then ``overrides``."""
    section = {**demo_editor_defaults(model_path, "dinm"), **suite.defaults.get("editor", {}).get("dinm", {})}
    return DINM(**{**DINM_SPEC.defaults, **validate_hparams(DINM_SPEC, section, "suite"), **overrides})


def main() -> None:
    model_path, suite_path, max_new, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    select = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "-k" else ""
    suite = load_suite(suite_path)
    editor = suite_dinm(model_path, suite)
    model = load_model(ModelSettings(model_path), gguf_cache=cache_root())
    judge = RefusalJudge()

    def answer(text: str, suffix: bool) -> str:
        user, system = editor.prompt(text) if suffix else (text, None)
        prompt = model.format_prompt(user, system, max_new_tokens=max_new)
        return model.generate([prompt], max_new_tokens=max_new, batch_size=1, prune=False)[0]

    verdicts = {}
    for case in suite.cases:
        if case.benign or select not in case.id:
            continue
        before = [answer(p.text, False) for p in case.probes]
        with editor.edit(model, case):
            after = [answer(p.text, True) for p in case.probes]
        # Judged as the plugin judges: each response with the text its model answered.
        before_verdicts = judge.judge(before, [p.text for p in case.probes])
        after_verdicts = judge.judge(after, [editor.prompt(p.text)[0] for p in case.probes])
        for probe, b, a in zip(case.probes, before_verdicts, after_verdicts):
            verdicts[f"{case.id}[{probe.kind}]"] = [b.label, a.label]
    Path(out).write_text(json.dumps(verdicts, indent=1))
    print(len(verdicts), "probes")


if __name__ == "__main__":
    main()
