"""DINM (toxic-layer localization and a constrained edit of that layer's MLP output projection) and FT-L."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from pytest_safeedit.backends.architecture import ArchitectureError, block_count, mlp_output_projection
from pytest_safeedit.editors.base import EditDetails, EditorSpec, Stopwatch, only_trainable, weights_restored

if TYPE_CHECKING:
    import torch

    from pytest_safeedit.backends.architecture import Projection
    from pytest_safeedit.backends.hf import LoadedModel
    from pytest_safeedit.cases.model import Case

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


class FrozenBelow:
    """Replays the outputs of the blocks below the edited one.

    Only one projection of block ``layer`` trains, so the blocks below it give the same outputs at every
    step: each input's are computed on its first forward pass (keyed by ``key``) and returned unchanged
    after, so that a step runs only the blocks from the edited one up. Works on any architecture whose
    blocks are called as modules; the blocks' own ``forward`` (an accelerate hook's too) is put back.
    """

    def __init__(self, model: Any, layer: int) -> None:
        from pytest_safeedit.backends.architecture import transformer_blocks

        self.blocks = list(transformer_blocks(model))[:layer]
        self.saved: dict[str, list[Any]] = {}
        self.key = ""

    @contextmanager
    def active(self) -> Iterator[FrozenBelow]:
        own = [block.__dict__.get("forward") for block in self.blocks]
        for index, block in enumerate(self.blocks):
            block.forward = self._replay(index, block.forward)
        try:
            yield self
        finally:
            for block, forward in zip(self.blocks, own):
                if forward is None:
                    del block.forward
                else:
                    block.forward = forward

    def _replay(self, index: int, forward: Any) -> Any:
        def replayed(*args: Any, **kwargs: Any) -> Any:
            saved = self.saved.setdefault(self.key, [])
            if index < len(saved):
                return saved[index]
            out = forward(*args, **kwargs)
            saved.append(out)
            return out

        return replayed

    def run(self, key: str, net: Any, **inputs: Any) -> Any:
        """``net``'s forward pass on ``inputs``, the blocks below replayed from ``key``'s first pass."""
        self.key = key
        return net(**inputs)


def _keep_kwargs(net: Any, count: int) -> dict[str, Any]:
    """Ask for the logits of the last ``count`` positions only, where the model's forward can."""
    import inspect

    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(net.forward).parameters else {}


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
    layer: int | None = None,
) -> None:
    """Train only ``projection``'s weight: ``nll_weight`` x NLL(target | prompt) + KL on the knowledge answer.

    The KL term is KL(p_before || p_now) over the answer's tokens given the knowledge prompt, with
    p_before from the unedited model; ``kl_grad=False`` makes it a constant, as the public reference
    implementation computes it.

    With ``layer`` (the block that holds ``projection``) the edit is lean: the NLL and KL inputs run as
    two passes of their own lengths (no padding of one to the other), the blocks below ``layer`` run once
    per input (:class:`FrozenBelow`), and only the logits of the target tokens are computed. The result
    equals the straightforward computation (``layer`` None: one padded batch of both inputs through the
    whole model at every step) up to floating-point order (tested).
    """
    import torch

    nll_ids, nll_start, nll_len = teacher_forced(model, prompt, target)
    net = model.model
    device = model.device
    kl_parts = teacher_forced(model, knowledge[0], knowledge[1]) if knowledge is not None else None
    weight = projection.weight
    original = weight.detach().clone() if norm_constraint else None
    optimizer = torch.optim.Adam([weight], lr=lr, weight_decay=0.0)
    frozen = FrozenBelow(net, layer) if layer is not None else None

    def lean_logits(key: str, ids: list[int], count: int) -> torch.Tensor:
        """Logits predicting the last ``count`` tokens of ``ids`` (one row, its own length)."""
        assert frozen is not None
        inputs = torch.tensor([ids], dtype=torch.long, device=device)
        out = frozen.run(key, net, input_ids=inputs, use_cache=False, **_keep_kwargs(net, count + 1))
        logits: torch.Tensor = out.logits[0, -(count + 1) : -1]
        return logits

    if frozen is None:
        rows = [nll_ids] + ([kl_parts[0]] if kl_parts is not None else [])
        input_ids, mask = right_padded(rows, model.pad_id, device)
        nll_targets = input_ids[0, nll_start : nll_start + nll_len]
    else:
        nll_targets = torch.tensor(nll_ids[nll_start:], dtype=torch.long, device=device)

    def logits_now() -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits over the target tokens and over the knowledge answer's tokens (None without knowledge)."""
        if frozen is not None:
            nll_logits = lean_logits("nll", nll_ids, nll_len)
            kl_logits = lean_logits("kl", kl_parts[0], kl_parts[2]) if kl_parts is not None else None
            return nll_logits, kl_logits
        logits = net(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        nll_logits = logits[0, nll_start - 1 : nll_start - 1 + nll_len]
        if kl_parts is None:
            return nll_logits, None
        return nll_logits, logits[1, kl_parts[1] - 1 : kl_parts[1] - 1 + kl_parts[2]]

    with frozen.active() if frozen is not None else nullcontext():
        logp_before = None
        if kl_parts is not None:
            kl_ids, kl_start, kl_len = kl_parts
            with torch.no_grad():
                if frozen is not None:
                    before = lean_logits("kl", kl_ids, kl_len)
                else:
                    ids, row_mask = right_padded([kl_ids], model.pad_id, device)
                    before = net(input_ids=ids, attention_mask=row_mask, use_cache=False).logits[
                        0, kl_start - 1 : kl_start - 1 + kl_len
                    ]
            logp_before = before.float().log_softmax(-1)
        # The caller may run under no_grad (pytest items, inference code): training needs gradients.
        with torch.enable_grad():
            for _ in range(steps):
                nll_logits, kl_logits = logits_now()
                nll = torch.nn.functional.cross_entropy(nll_logits.float(), nll_targets)
                loss = nll_weight * nll
                kl_value = 0.0
                if logp_before is not None and kl_logits is not None:
                    logp_now = kl_logits.float().log_softmax(-1)
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
        lean: the lean edit (each input at its own length, the blocks below the edited one run once, only
            the needed logits); false runs the straightforward computation (the result is the same up to
            floating-point order).
    """

    name = "dinm"
    #: The edit changes one weight matrix (the edited block's MLP output projection, named in the details):
    #: several cases' edited models can answer in one batch.
    single_weight = True

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
        lean: bool = True,
    ) -> None:
        self.lean = lean
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
                    layer=details.layer if self.lean else None,
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
        self,
        *,
        lr: float,
        steps: int,
        early_stop_loss: float,
        norm_constraint: float | None,
        layer: int | None,
        lean: bool = True,
    ) -> None:
        super().__init__(
            lean=lean,
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
        "lean": True,
    },
    description="locate the toxic layer per case, edit its MLP output projection (NLL + KL)",
)
FTL_SPEC = EditorSpec(
    "ft-l",
    FTL,
    defaults={
        "lr": 5e-4,
        "steps": 10,
        "early_stop_loss": 1e-4,
        "norm_constraint": None,
        "layer": None,
        "lean": True,
    },
    description="fine-tune one fixed layer's MLP output projection on the safe response",
)
