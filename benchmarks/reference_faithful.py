"""Baseline for the DINM benchmark: the public reference implementation's own protocol, step for step.

Per attack case: the unedited model answers the case's five probes as one left-padded batch (no chat
template, as the reference formats no prompt), one DINM edit with the reference's loop (toxic layer from
the safe and unsafe references; every step a full forward pass of the NLL input and a separate full
forward pass of the knowledge input, logits at every position; Adam on the layer's MLP output projection),
the edited model answers the five probes (with DINM's suffix) as one batch, the weights are restored. No
cache. The hyperparameters and the judge are the plugin's, so that the verdicts can be compared with
``pytest --safeedit-editor dinm --safeedit-chat-template off`` on the same cases. A GGUF model is loaded
from the same converted folder the plugin uses (the reference cannot read GGUF; its users convert first).

Usage: python benchmarks/reference_faithful.py MODEL SUITE MAX_NEW_TOKENS OUT.json [-k SUBSTRING]
Writes {"verdicts": {"case[probe]": [before, after]}, "edit_seconds": [...]} to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from reference_pipeline import suite_dinm

from pytest_safeedit.backends.architecture import mlp_output_projection
from pytest_safeedit.backends.hf import LoadedModel, load_model
from pytest_safeedit.cases.loading import load_suite
from pytest_safeedit.cases.model import Case
from pytest_safeedit.config.settings import ModelSettings
from pytest_safeedit.editors.dinm import DINM, locate_toxic_layer, teacher_forced
from pytest_safeedit.judges.refusal import RefusalJudge
from pytest_safeedit.util.cache import cache_root


def reference_edit(model: LoadedModel, case: Case, editor: DINM) -> float:
    """The reference's DINM edit of ``case`` (weights changed in place); returns its seconds."""
    import torch

    started = time.perf_counter()
    net = model.model
    layer, _ = locate_toxic_layer(model, case.safe, case.unsafe)
    weight = mlp_output_projection(net, layer).weight
    for param in net.parameters():
        param.requires_grad_(param is weight)
    device = model.device
    nll_ids, nll_start, nll_len = teacher_forced(model, editor.prompt(case.adversarial_prompt)[0], case.safe)
    nll_input = torch.tensor([nll_ids], device=device)
    kl_input = None
    if case.knowledge is not None:
        kl_ids, kl_start, kl_len = teacher_forced(model, editor.prompt(case.knowledge.prompt)[0], case.knowledge.answer)
        kl_input = torch.tensor([kl_ids], device=device)
        with torch.no_grad():
            before = net(input_ids=kl_input).logits[0, kl_start - 1 : kl_start - 1 + kl_len].float().log_softmax(-1)
    optimizer = torch.optim.Adam([weight], lr=editor.training.lr, weight_decay=0.0)
    with torch.enable_grad():
        for _ in range(editor.training.steps):
            logits = net(input_ids=nll_input).logits[0, nll_start - 1 : nll_start - 1 + nll_len]
            loss = editor.training.nll_weight * torch.nn.functional.cross_entropy(
                logits.float(), nll_input[0, nll_start:]
            )
            if kl_input is not None:
                now = net(input_ids=kl_input).logits[0, kl_start - 1 : kl_start - 1 + kl_len].float().log_softmax(-1)
                kl = (before.exp() * (before - now)).sum(-1).mean()
                loss = loss + (kl if editor.training.kl_grad else kl.detach())
            if float(loss.detach()) < editor.training.early_stop_loss:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for param in net.parameters():
        param.requires_grad_(False)
    return time.perf_counter() - started


def main() -> None:
    import torch

    model_path, suite_path, max_new, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    select = sys.argv[6] if len(sys.argv) > 6 and sys.argv[5] == "-k" else ""
    suite = load_suite(suite_path)
    editor = suite_dinm(model_path, suite)
    model = load_model(ModelSettings(model_path, chat_template="off"), gguf_cache=cache_root())
    judge = RefusalJudge()

    def answer(texts: list[str]) -> list[str]:
        prompts = [model.format_prompt(t, max_new_tokens=max_new) for t in texts]
        # One plain left-padded batch, as the reference answers: no shared prefixes, no token-budget cuts.
        return model.generate(
            prompts, max_new_tokens=max_new, batch_size=len(prompts), prune=False, prefix_cache_mb=0, pad_share=1.0
        )

    verdicts: dict[str, list[str]] = {}
    edit_seconds: list[float] = []
    for case in suite.cases:
        if case.benign or select not in case.id:
            continue
        texts = [p.text for p in case.probes]
        before = answer(texts)
        saved = {n: p.detach().clone() for n, p in model.model.named_parameters()}
        edit_seconds.append(reference_edit(model, case, editor))
        suffixed = [editor.prompt(t)[0] for t in texts]
        after = answer(suffixed)
        with torch.no_grad():
            for name, param in model.model.named_parameters():
                param.copy_(saved[name])
        b_verdicts = judge.judge(before, texts, [case.category] * len(texts))
        a_verdicts = judge.judge(after, suffixed, [case.category] * len(texts))
        for probe, b, a in zip(case.probes, b_verdicts, a_verdicts):
            verdicts[f"{case.id}[{probe.kind}]"] = [b.label, a.label]
    result: dict[str, Any] = {"verdicts": verdicts, "edit_seconds": edit_seconds}
    Path(out).write_text(json.dumps(result, indent=1))
    print(len(verdicts), "probes")


if __name__ == "__main__":
    main()
