"""One DINM edit: the lean edit against the straightforward one, on the same model and cases, in one process.

Per case, both edits run back to back (the order alternates between cases); each is timed from the toxic
layer's localization to the last step, with the weights restored after. Prints the median seconds of each,
their ratio, and the largest difference between the two edited weights relative to the largest change.

Usage: python benchmarks/edit_speed.py MODEL SUITE [-k SUBSTRING] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from reference_pipeline import suite_dinm

from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Case
from pytest_safeedit.config.settings import ModelSettings
from pytest_safeedit.editors.dinm import DINM
from pytest_safeedit.util.cache import cache_root


def timed_edit(model: LoadedModel, editor: DINM, case: Case) -> tuple[float, Any, Any, int]:
    """Seconds of one edit, the edited weight, its original, and the layer."""
    started = time.perf_counter()
    with editor.edit(model, case) as details:
        seconds = time.perf_counter() - started
        assert details.module is not None and details.layer is not None
        weight = dict(model.model.named_parameters())[details.module + ".weight"]
        edited = weight.detach().clone()
    return seconds, edited, weight.detach().clone(), details.layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("suite", type=Path)
    parser.add_argument("-k", default="", help="only cases whose id contains this")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    lean, plain = suite_dinm(args.model, suite, lean=True), suite_dinm(args.model, suite, lean=False)
    model = load_model(ModelSettings(args.model), gguf_cache=cache_root())
    cases = [c for c in suite.cases if not c.benign and args.k in c.id]
    timed_edit(model, lean, cases[0])  # warm-up: first-call allocations
    times: dict[str, list[float]] = {"lean": [], "straightforward": []}
    worst = 0.0
    for index, case in enumerate(cases):
        order = [("lean", lean), ("straightforward", plain)]
        results = {}
        for name, editor in order if index % 2 == 0 else order[::-1]:
            seconds, edited, original, layer = timed_edit(model, editor, case)
            times[name].append(seconds)
            results[name] = (edited, original)
        change = float((results["straightforward"][0] - results["straightforward"][1]).abs().max())
        diff = float((results["lean"][0] - results["straightforward"][0]).abs().max())
        worst = max(worst, diff / change if change else 0.0)
    lean_s, plain_s = statistics.median(times["lean"]), statistics.median(times["straightforward"])
    out = {
        "cases": len(cases),
        "lean_median_s": round(lean_s, 3),
        "straightforward_median_s": round(plain_s, 3),
        "ratio": round(plain_s / lean_s, 2),
        "largest_weight_difference_relative_to_change": worst,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
