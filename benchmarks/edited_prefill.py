"""Edits answered together: prefixes shared below the lowest edited block against each edit's own.

    python benchmarks/edited_prefill.py PATH/TO/SafeEdit_train.json [--cases 3] [--max-new-tokens 8]

SmolLM2-135M-Instruct (float32, its converted folder, as ``official_records.py`` loads it), ``--cases``
official records paired as there (the records stay in a temporary file). Each case is edited with DINM
(the paper's settings) and its edited weight kept; then the five probes of every case (with DINM's suffix
and the chat template, as the plugin sends them) are generated in one call, each row with its own case's
weight: once sharing prefixes across the edits below the lowest edited block, once with each edit's rows
sharing only among themselves (what the backend did before; it still does so where sharing below cannot be
exact). Each way runs ``--repeats`` times (2), alternating, in one process (the first run sharing below
also checks the split against one pass, once per model, as a run does); the fastest of each is reported,
in wall and CPU seconds, with the answers checked equal and the work of each way in block-tokens (the
tokens each block computes, summed over the blocks: a count that no load on the machine changes).
``--threads``: torch's threads (default: torch's own choice); 1 keeps a loaded machine's timings steady.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from official_records import paired, smollm2_folder
from reference_pipeline import suite_dinm

from pytest_safeedit.backends.architecture import mlp_output_projection
from pytest_safeedit.backends.hf import load_model
from pytest_safeedit.backends.rows import row_weights
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.config.settings import ModelSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=Path, help="an official SafeEdit JSON file (e.g. the train split)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch's threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = json.loads(args.official.read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="safeedit-edited-prefill-"))
    try:
        path = work / "SafeEdit_bench.json"
        path.write_text(json.dumps(paired(records, args.cases)), encoding="utf-8")
        suite = load_suite(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = load_model(ModelSettings(str(smollm2_folder())))
    editor = suite_dinm(str(smollm2_folder()), suite)
    started = time.perf_counter()
    edited: list[tuple[str, Any]] = []
    layers = []
    for case in suite.cases:
        with editor.edit(model, case) as details:
            assert details.module is not None
            edited.append((details.module, dict(model.model.named_parameters())[details.module + ".weight"].clone()))
            layers.append(details.layer)
    edit_s = time.perf_counter() - started
    new = args.max_new_tokens
    prompts = [model.format_prompt(editor.prompt(p.text)[0], max_new_tokens=new) for c in suite.cases for p in c.probes]
    rows = [edit for edit, case in zip(edited, suite.cases) for _ in case.probes]
    ids = model.token_rows(prompts, new)
    seconds: dict[str, list[float]] = {"shared below": [], "per edit": []}
    cpu: dict[str, list[float]] = {way: [] for way in seconds}
    work: dict[str, int] = {}
    answers: dict[str, list[str]] = {}
    computed = [0]
    for layer in range(model.model.config.num_hidden_layers):

        def count(_: Any, inputs: tuple[Any, ...]) -> None:
            computed[0] += inputs[0].numel() // inputs[0].shape[-1]

        mlp_output_projection(model.model, layer).module.register_forward_pre_hook(count)
    with row_weights(model.model, rows) as weights:
        keys = weights.weight_keys(len(ids))
        below = model.shared_below(weights, keys)
        plan = model.prefix_plan(ids, new, 1024, weights, below)
        for _ in range(args.repeats):
            for way in seconds:
                checked = dict(model._split_exact)  # the first run checks the split once, as a run does
                if way == "per edit":
                    model._split_exact["below"] = False  # as after a failed check
                computed[0] = 0
                started, started_cpu = time.perf_counter(), time.process_time()
                answers[way] = model.generate(prompts, max_new_tokens=new, row_weights=weights)
                seconds[way].append(time.perf_counter() - started)
                cpu[way].append(time.process_time() - started_cpu)
                work[way] = computed[0]
                if way == "per edit":
                    model._split_exact.clear()
                    model._split_exact.update(checked)
    figures = {
        "cases": args.cases,
        "rows": len(prompts),
        "prompt_tokens": sum(len(row) for row in ids),
        "max_new_tokens": new,
        "edited_layers": layers,
        "shared_below_block": below,
        "blocks": model.model.config.num_hidden_layers,
        "prefixes_across_edits": sum(len({keys[r] for r in p.rows}) > 1 for p in plan.prefixes),
        "edits_s": round(edit_s, 1),
        "generate_shared_below_s": round(min(seconds["shared below"]), 2),
        "generate_per_edit_s": round(min(seconds["per edit"]), 2),
        "generate_shared_below_cpu_s": round(min(cpu["shared below"]), 2),
        "generate_per_edit_cpu_s": round(min(cpu["per edit"]), 2),
        "all_runs_s": {way: [round(s, 2) for s in runs] for way, runs in seconds.items()},
        "block_tokens": work,
        "threads": args.threads,
        "answers_equal": answers["shared below"] == answers["per edit"],
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
