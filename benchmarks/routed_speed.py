"""Seconds per edit, DINM against routed, on the same model and cases, in one process.

Each editor takes its defaults with the demo's tuning when the model is the demo. The routed editor's probe
is trained once first (timed apart: its hidden states and probes, once per suite); then every attack case
is edited REPEATS times by each editor, the order alternating, so that a shared machine's load falls on
both alike. A routed edit is timed with the flagging of the case's probe inputs. Prints the medians, the
probe's once-per-suite seconds, and routed's cost per case (median + probe seconds / cases) over DINM's.

Usage: python benchmarks/routed_speed.py [MODEL] [SUITE] [--repeats N]   (default: demo, suites/sample.yaml)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Case
from pytest_safeedit.config.settings import ModelSettings
from pytest_safeedit.demo.model import demo_editor_defaults, ensure_demo
from pytest_safeedit.editors.dinm import DINM, DINM_SPEC
from pytest_safeedit.editors.routed import ROUTED_SPEC, Routed


def timed(model: LoadedModel, editor: DINM | Routed, case: Case) -> float:
    started = time.perf_counter()
    if isinstance(editor, Routed):
        editor.flags(model, [p.text for p in case.probes])
    with editor.edit(model, case):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="demo")
    parser.add_argument("suite", nargs="?", default=str(Path(__file__).parent.parent / "suites" / "sample.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = str(ensure_demo()) if args.model == "demo" else args.model
    model = load_model(ModelSettings(path))
    suite = load_suite(Path(args.suite))
    attacks = [c for c in suite.cases if not c.benign]
    dinm = DINM(**{**DINM_SPEC.defaults, **demo_editor_defaults(args.model, "dinm")})
    routed = Routed(**{**ROUTED_SPEC.defaults, **demo_editor_defaults(args.model, "routed")})
    harmless = [c.question for c in suite.cases if c.benign] + [c.knowledge.prompt for c in attacks if c.knowledge]
    report = routed.fit(model, [p.text for c in attacks for p in c.probes], harmless)
    times: dict[str, list[float]] = {"dinm": [], "routed": []}
    for repeat in range(args.repeats):
        for index, case in enumerate(attacks):
            pair: list[tuple[str, DINM | Routed]] = [("dinm", dinm), ("routed", routed)]
            for name, editor in pair if (repeat + index) % 2 == 0 else pair[::-1]:
                times[name].append(timed(model, editor, case))
    dinm_s, routed_s = statistics.median(times["dinm"]), statistics.median(times["routed"])
    per_case = routed_s + report["probe_seconds"] / len(attacks)
    print(f"dinm median {dinm_s:.4f} s, routed median {routed_s:.4f} s ({len(times['dinm'])} edits each)")
    print(f"routed probe {report['probe_seconds']:.3f} s once ({report})")
    print(f"routed per case {per_case:.4f} s = {per_case / dinm_s:.2f}x dinm")


if __name__ == "__main__":
    main()
