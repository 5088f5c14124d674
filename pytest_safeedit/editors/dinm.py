"""DINM (toxic-layer localization and a constrained edit of that layer's MLP output projection) and FT-L."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
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


def keep_kwargs(net: Any, count: int) -> dict[str, Any]:
    """Ask for the logits of the last ``count`` positions only, where the model's forward can."""
    import inspect

    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(net.forward).parameters else {}


@dataclass(frozen=True)
class Training:
    """How a projection is trained (see :func:`train_projection`).

    Args:
        lr: Adam learning rate.
        steps: most optimizer steps.
        nll_weight: the weight of the NLL of the target.
        early_stop_loss: stop once the loss is below this.
        norm_constraint: when set, each weight stays within +-this of its original value.
        kl_grad: keep the KL term's gradient; false makes it a constant.
        lean: each input at its own length, the blocks below the edited one run once, only the needed
            logits; false runs one padded batch through the whole model at every step.
    """

    lr: float
    steps: int
    nll_weight: float = 1.0
    early_stop_loss: float = 1e-4
    norm_constraint: float | None = None
    kl_grad: bool = True
    lean: bool = True


Span = tuple[list[int], int, int]  # token ids, where the target starts, how many target tokens


class _LeanPasses:
    """Each input as a pass of its own length, the blocks below ``layer`` replayed (:class:`FrozenBelow`),
    only the logits of the target tokens computed."""

    def __init__(self, model: LoadedModel, layer: int, nll: Span, kl: Span | None) -> None:
        self.net, self.device = model.model, model.device
        self.nll, self.kl = nll, kl
        self.frozen = FrozenBelow(self.net, layer)

    def active(self) -> AbstractContextManager[Any]:
        return self.frozen.active()

    def nll_targets(self) -> torch.Tensor:
        import torch

        ids, start, _ = self.nll
        return torch.tensor(ids[start:], dtype=torch.long, device=self.device)

    def _logits(self, key: str, span: Span) -> torch.Tensor:
        import torch

        ids, _, count = span
        inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.frozen.run(key, self.net, input_ids=inputs, use_cache=False, **keep_kwargs(self.net, count + 1))
        logits: torch.Tensor = out.logits[0, -(count + 1) : -1]
        return logits

    def knowledge_logits(self) -> torch.Tensor | None:
        return None if self.kl is None else self._logits("kl", self.kl)

    def logits(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._logits("nll", self.nll), self.knowledge_logits()


class _PaddedPasses:
    """The straightforward computation: both inputs in one right-padded batch through the whole model."""

    def __init__(self, model: LoadedModel, nll: Span, kl: Span | None) -> None:
        self.net, self.pad_id, self.device = model.model, model.pad_id, model.device
        self.nll, self.kl = nll, kl
        rows = [nll[0]] + ([kl[0]] if kl is not None else [])
        self.input_ids, self.mask = right_padded(rows, model.pad_id, model.device)

    def active(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def nll_targets(self) -> torch.Tensor:
        _, start, count = self.nll
        return self.input_ids[0, start : start + count]

    def knowledge_logits(self) -> torch.Tensor | None:
        if self.kl is None:
            return None
        ids, start, count = self.kl
        row, row_mask = right_padded([ids], self.pad_id, self.device)
        logits: torch.Tensor = self.net(input_ids=row, attention_mask=row_mask, use_cache=False).logits
        return logits[0, start - 1 : start - 1 + count]

    def logits(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.net(input_ids=self.input_ids, attention_mask=self.mask, use_cache=False).logits
        _, start, count = self.nll
        nll_logits = logits[0, start - 1 : start - 1 + count]
        if self.kl is None:
            return nll_logits, None
        _, kl_start, kl_count = self.kl
        return nll_logits, logits[1, kl_start - 1 : kl_start - 1 + kl_count]


def train_projection(
    model: LoadedModel,
    projection: Projection,
    details: EditDetails,
    *,
    prompt: str,
    target: str,
    knowledge: tuple[str, str] | None,
    training: Training,
    layer: int | None = None,
) -> None:
    """Train only ``projection``'s weight: ``nll_weight`` x NLL(target | prompt) + KL on the knowledge answer.

    The KL term is KL(p_before || p_now) over the answer's tokens given the knowledge prompt, with
    p_before from the unedited model; ``kl_grad=False`` makes it a constant, as the public reference
    implementation computes it.

    With ``training.lean`` and ``layer`` (the block that holds ``projection``) the edit is lean: the NLL and
    KL inputs run as two passes of their own lengths (no padding of one to the other), the blocks below
    ``layer`` run once per input (:class:`FrozenBelow`), and only the logits of the target tokens are
    computed. The result equals the straightforward computation (one padded batch of both inputs through
    the whole model at every step) up to floating-point order (tested).
    """
    import torch

    nll = teacher_forced(model, prompt, target)
    kl = teacher_forced(model, knowledge[0], knowledge[1]) if knowledge is not None else None
    passes: _LeanPasses | _PaddedPasses
    if training.lean and layer is not None:
        passes = _LeanPasses(model, layer, nll, kl)
    else:
        passes = _PaddedPasses(model, nll, kl)
    with passes.active():
        with torch.no_grad():
            before = passes.knowledge_logits()
        logp_before = None if before is None else before.float().log_softmax(-1)
        # The caller may run under no_grad (pytest items, inference code): training needs gradients.
        with torch.enable_grad():
            _optimize(projection.weight, passes, logp_before, training, details)


def _optimize(
    weight: torch.nn.Parameter,
    passes: _LeanPasses | _PaddedPasses,
    logp_before: torch.Tensor | None,
    training: Training,
    details: EditDetails,
) -> None:
    """Adam steps on ``weight`` until the loss is below the early-stop loss or the steps run out."""
    import torch

    original = weight.detach().clone() if training.norm_constraint else None
    optimizer = torch.optim.Adam([weight], lr=training.lr, weight_decay=0.0)
    targets = passes.nll_targets()
    for _ in range(training.steps):
        nll_logits, kl_logits = passes.logits()
        nll = torch.nn.functional.cross_entropy(nll_logits.float(), targets)
        loss = training.nll_weight * nll
        kl_value = 0.0
        if logp_before is not None and kl_logits is not None:
            logp_now = kl_logits.float().log_softmax(-1)
            kl = (logp_before.exp() * (logp_before - logp_now)).sum(-1).mean()
            if not training.kl_grad:
                kl = kl.detach()
            kl_value = float(kl.detach())
            loss = loss + kl
        details.losses = {
            "loss": round(float(loss.detach()), 6),
            "nll": round(float(nll.detach()), 6),
            "kl": round(kl_value, 6),
        }
        if details.losses["loss"] < training.early_stop_loss:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        details.steps += 1
        if original is not None and training.norm_constraint is not None:
            with torch.no_grad():
                bound = training.norm_constraint
                weight.copy_(torch.clamp(weight, original - bound, original + bound))
    optimizer.zero_grad()


@contextmanager
def projection_edit(
    name: str,
    model: LoadedModel,
    case: Case,
    *,
    layer: Callable[[EditDetails], int],
    prompt: Callable[[str], str],
    training: Training,
    uses_knowledge: bool,
) -> Iterator[EditDetails]:
    """Edit the MLP output projection of block ``layer(details)`` with ``case`` (its attack prompt to its
    safe reference, and the knowledge answer kept where ``uses_knowledge``); restored exactly on exit."""
    clock = Stopwatch()
    details = EditDetails(editor=name, case_id=case.id)
    details.layer = layer(details)
    projection = mlp_output_projection(model.model, details.layer)
    details.module = projection.name
    knowledge = None
    if uses_knowledge and case.knowledge is not None:
        knowledge = (prompt(case.knowledge.prompt), case.knowledge.answer)
    with weights_restored([projection.weight]):
        with only_trainable(model.model, [projection.weight]):
            train_projection(
                model,
                projection,
                details,
                prompt=prompt(case.adversarial_prompt),
                target=case.safe,
                knowledge=knowledge,
                training=training,
                layer=details.layer,
            )
        details.seconds = clock.seconds()
        yield details


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
        self.training = Training(lr, steps, nll_weight, early_stop_loss, norm_constraint, kl_grad, lean)
        self.suffix = suffix

    def prompt(self, text: str) -> tuple[str, str | None]:
        return with_suffix(text, self.suffix), None

    def choose_layer(self, model: LoadedModel, case: Case, details: EditDetails) -> int:
        """The toxic layer: the block whose outputs differ most between the case's references."""
        layer, distances = locate_toxic_layer(model, case.safe, case.unsafe)
        details.layer_distances = distances
        return layer

    def edit(self, model: LoadedModel, case: Case) -> AbstractContextManager[EditDetails]:
        return projection_edit(
            self.name,
            model,
            case,
            layer=lambda details: self.choose_layer(model, case, details),
            prompt=lambda text: self.prompt(text)[0],
            training=self.training,
            uses_knowledge=True,
        )


class FTL:
    """FT-L: fine-tune one fixed block's MLP output projection on the safe response (no localization, no KL).

    Args:
        lr: Adam learning rate.
        steps: most optimizer steps per case.
        early_stop_loss: stop once the loss is below this.
        norm_constraint: when set, each edited weight stays within +-this of its original value.
        layer: the block to edit; negative counts from the end; default: the middle block.
        lean: the lean edit, as DINM's.
    """

    name = "ft-l"
    single_weight = True

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
        self.training = Training(lr, steps, 1.0, early_stop_loss, norm_constraint, True, lean)
        self.layer = layer

    def prompt(self, text: str) -> tuple[str, str | None]:
        return text, None

    def choose_layer(self, model: LoadedModel, case: Case, details: EditDetails) -> int:
        count = block_count(model.model)
        layer = count // 2 if self.layer is None else self.layer
        if not -count <= layer < count:
            raise ArchitectureError(
                f"ft-l layer {layer} is out of range: {type(model.model).__name__} has {count} blocks"
            )
        return layer % count

    def edit(self, model: LoadedModel, case: Case) -> AbstractContextManager[EditDetails]:
        return projection_edit(
            self.name,
            model,
            case,
            layer=lambda details: self.choose_layer(model, case, details),
            prompt=lambda text: text,
            training=self.training,
            uses_knowledge=False,
        )


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
