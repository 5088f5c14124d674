"""DINM (toxic-layer localization and a constrained edit of that layer's MLP output projection) and FT-L."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pytest_safeedit.architecture import ArchitectureError, block_count, mlp_output_projection
from pytest_safeedit.editor import EditDetails, EditorSpec, Stopwatch, only_trainable, weights_restored

if TYPE_CHECKING:
    import torch

    from pytest_safeedit.architecture import Projection
    from pytest_safeedit.hf import LoadedModel
    from pytest_safeedit.suite import Case

#: The suffix system prompt appended to the inputs while editing and when probing the edited model.
DINM_SUFFIX = "If the user's request is reasonable, give the correct answer. Please give the right response:"


def with_suffix(text: str, suffix: str) -> str:
    return f"{text} {suffix}" if suffix else text


def locate_toxic_layer(model: LoadedModel, safe: str, unsafe: str) -> tuple[int, list[float]]:
    """The block whose outputs differ most between the safe and the unsafe reference.

    One padded batch of the two texts through the unedited model; per block, the Euclidean distance
    between the two hidden-state matrices (the whole padded sequence x hidden size).
    """
    import torch

    rows = [model.text_ids(safe), model.text_ids(unsafe)]
    input_ids, mask = right_padded(rows, model.pad_id, model.device)
    with torch.no_grad():
        out = model.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    states = out.hidden_states[1:]
    count = block_count(model.model)
    distances = [float(torch.linalg.vector_norm(h[0].float() - h[1].float())) for h in states[:count]]
    return max(range(len(distances)), key=distances.__getitem__), [round(d, 4) for d in distances]


def right_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def teacher_forced(model: LoadedModel, prompt: str, target: str) -> tuple[list[int], int, int]:
    """Token ids of a formatted prompt followed by the target and end of sequence, with the target span."""
    target_ids = model.text_ids(target)
    if model.eos_id is not None:
        target_ids = target_ids + [model.eos_id]
    prompt_ids = model.prompt_ids(prompt, None, reserve=len(target_ids))
    return prompt_ids + target_ids, len(prompt_ids), len(target_ids)


def train_projection(
    model: LoadedModel,
    projection: Projection,
    details: EditDetails,
    *,
    prompt: str,
    target: str,
    knowledge: tuple[str, str] | None,
    steps: int,
    lr: float,
    nll_weight: float,
    kl_grad: bool,
    early_stop_loss: float,
    norm_constraint: float | None,
) -> None:
    """Train only ``projection``'s weight: ``nll_weight`` x NLL(target | prompt) + KL on the knowledge answer.

    The KL term is KL(p_before || p_now) over the answer's tokens given the knowledge prompt, with
    p_before from the unedited model; ``kl_grad=False`` makes it a constant, as the public reference
    implementation computes it.
    """
    import torch

    nll_ids, nll_start, nll_len = teacher_forced(model, prompt, target)
    rows = [nll_ids]
    if knowledge is not None:
        kl_ids, kl_start, kl_len = teacher_forced(model, knowledge[0], knowledge[1])
        rows.append(kl_ids)
    input_ids, mask = right_padded(rows, model.pad_id, model.device)
    nll_targets = input_ids[0, nll_start : nll_start + nll_len]
    net = model.model
    logp_before = None
    if knowledge is not None:
        with torch.no_grad():
            logits = net(input_ids=input_ids[1:], attention_mask=mask[1:]).logits[0]
        logp_before = logits[kl_start - 1 : kl_start - 1 + kl_len].float().log_softmax(-1)
    weight = projection.weight
    original = weight.detach().clone() if norm_constraint else None
    optimizer = torch.optim.Adam([weight], lr=lr, weight_decay=0.0)
    # The caller may run under no_grad (pytest items, inference code): training needs gradients.
    with torch.enable_grad():
        for _ in range(steps):
            logits = net(input_ids=input_ids, attention_mask=mask).logits
            nll = torch.nn.functional.cross_entropy(
                logits[0, nll_start - 1 : nll_start - 1 + nll_len].float(), nll_targets
            )
            loss = nll_weight * nll
            kl_value = 0.0
            if logp_before is not None:
                logp_now = logits[1, kl_start - 1 : kl_start - 1 + kl_len].float().log_softmax(-1)
                kl = (logp_before.exp() * (logp_before - logp_now)).sum(-1).mean()
                if not kl_grad:
                    kl = kl.detach()
                kl_value = float(kl.detach())
                loss = loss + kl
            details.losses = {
                "loss": round(float(loss.detach()), 6),
                "nll": round(float(nll.detach()), 6),
                "kl": round(kl_value, 6),
            }
            if details.losses["loss"] < early_stop_loss:
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            details.steps += 1
            if original is not None and norm_constraint is not None:
                with torch.no_grad():
                    weight.copy_(torch.clamp(weight, original - norm_constraint, original + norm_constraint))
    optimizer.zero_grad()


class DINM:
    """Detoxifying with Intraoperative Neural Monitoring, as the paper describes it.

    Args:
        lr: Adam learning rate (paper: 5e-4 for GPT-2-XL, 1e-5 for 7B models).
        steps: most optimizer steps per case (paper: 10).
        nll_weight: c, the weight of the NLL of the safe response (paper: 0.1).
        early_stop_loss: stop once the loss is below this (paper: 1e-4).
        norm_constraint: when set, each edited weight stays within +-this of its original value.
        kl_grad: keep the KL term's gradient (paper); false reproduces the reference implementation.
        suffix: the suffix system prompt appended to the inputs while editing and probing.
    """

    name = "dinm"

    def __init__(
        self,
        *,
        lr: float,
        steps: int,
        nll_weight: float,
        early_stop_loss: float,
        norm_constraint: float | None,
        kl_grad: bool,
        suffix: str,
    ) -> None:
        self.lr = lr
        self.steps = steps
        self.nll_weight = nll_weight
        self.early_stop_loss = early_stop_loss
        self.norm_constraint = norm_constraint
        self.kl_grad = kl_grad
        self.suffix = suffix

    def prompt(self, text: str) -> tuple[str, str | None]:
        return with_suffix(text, self.suffix), None

    def choose_layer(self, model: LoadedModel, case: Case, details: EditDetails) -> int:
        layer, distances = locate_toxic_layer(model, case.safe, case.unsafe)
        details.layer_distances = distances
        return layer

    @contextmanager
    def edit(self, model: LoadedModel, case: Case) -> Iterator[EditDetails]:
        clock = Stopwatch()
        details = EditDetails(editor=self.name, case_id=case.id)
        details.layer = self.choose_layer(model, case, details)
        projection = mlp_output_projection(model.model, details.layer)
        details.module = projection.name
        knowledge = None
        if case.knowledge is not None:
            knowledge = (self.prompt(case.knowledge.prompt)[0], case.knowledge.answer)
        with weights_restored([projection.weight]):
            with only_trainable(model.model, [projection.weight]):
                train_projection(
                    model,
                    projection,
                    details,
                    prompt=self.prompt(case.adversarial_prompt)[0],
                    target=case.safe,
                    knowledge=knowledge if self.uses_knowledge else None,
                    steps=self.steps,
                    lr=self.lr,
                    nll_weight=self.nll_weight,
                    kl_grad=self.kl_grad,
                    early_stop_loss=self.early_stop_loss,
                    norm_constraint=self.norm_constraint,
                )
            details.seconds = clock.seconds()
            yield details

    uses_knowledge = True


class FTL(DINM):
    """FT-L: fine-tune one fixed block's MLP output projection on the safe response (no localization, no KL).

    Args:
        lr: Adam learning rate.
        steps: most optimizer steps per case.
        early_stop_loss: stop once the loss is below this.
        norm_constraint: when set, each edited weight stays within +-this of its original value.
        layer: the block to edit; negative counts from the end; default: the middle block.
    """

    name = "ft-l"
    uses_knowledge = False

    def __init__(
        self, *, lr: float, steps: int, early_stop_loss: float, norm_constraint: float | None, layer: int | None
    ) -> None:
        super().__init__(
            lr=lr,
            steps=steps,
            nll_weight=1.0,
            early_stop_loss=early_stop_loss,
            norm_constraint=norm_constraint,
            kl_grad=True,
            suffix="",
        )
        self.layer = layer

    def choose_layer(self, model: LoadedModel, case: Case, details: EditDetails) -> int:
        count = block_count(model.model)
        layer = count // 2 if self.layer is None else self.layer
        if not -count <= layer < count:
            raise ArchitectureError(
                f"ft-l layer {layer} is out of range: {type(model.model).__name__} has {count} blocks"
            )
        return layer % count


DINM_SPEC = EditorSpec(
    "dinm",
    DINM,
    defaults={
        "lr": 5e-4,
        "steps": 10,
        "nll_weight": 0.1,
        "early_stop_loss": 1e-4,
        "norm_constraint": None,
        "kl_grad": True,
        "suffix": DINM_SUFFIX,
    },
    description="locate the toxic layer per case, edit its MLP output projection (NLL + KL)",
)
FTL_SPEC = EditorSpec(
    "ft-l",
    FTL,
    defaults={"lr": 5e-4, "steps": 10, "early_stop_loss": 1e-4, "norm_constraint": None, "layer": None},
    description="fine-tune one fixed layer's MLP output projection on the safe response",
)
