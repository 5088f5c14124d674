"""The routed editor: DINM's edit, applied only to inputs that a linear probe on hidden states flags as harmful.

After ToxEdit (ACL 2025): a logistic-regression probe on one block's mean hidden state tells the suite's
attack inputs from its harmless ones; a flagged input is answered by the model with the case's DINM edit,
an unflagged one by the unedited model, exactly as if no edit had been made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_safeedit.backends.architecture import block_count
from pytest_safeedit.backends.stored import mark_restored, tensor_number
from pytest_safeedit.editors.base import EditDetails, EditorSpec, Stopwatch, assign_weights
from pytest_safeedit.editors.dinm import DINM, DINM_SPEC, keep_kwargs, right_padded

if TYPE_CHECKING:
    import torch

    from pytest_safeedit.backends.hf import LoadedModel
    from pytest_safeedit.cases.model import Case


class RoutingError(ValueError):
    """The probe cannot be trained: the suite lacks attack or harmless inputs."""


#: Inputs per forward pass when computing hidden states.
STATE_BATCH = 64


def mean_states(model: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
    """Per input and block, the mean over the formatted prompt's tokens of the block's output (inputs x
    blocks x hidden); right-padded batches, the padding masked out of the mean, no logits but the last."""
    import torch

    count = block_count(model.model)
    out = []
    for start in range(0, len(texts), STATE_BATCH):
        rows = [model.prompt_ids(t, None, reserve=1) for t in texts[start : start + STATE_BATCH]]
        ids, mask = right_padded(rows, model.pad_id, model.device)
        with torch.no_grad():
            hidden = model.model(
                input_ids=ids,
                attention_mask=mask,
                output_hidden_states=True,
                use_cache=False,
                **keep_kwargs(model.model, 1),
            ).hidden_states[1 : count + 1]
        weights = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1).float()
        out.append(torch.stack([(h.float() * weights).sum(1) for h in hidden], dim=1).cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class Probe:
    """A logistic-regression probe on one block's standardized mean hidden state."""

    block: int
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: float

    def harmful(self, states: torch.Tensor) -> torch.Tensor:
        """Whether each row of ``states`` (inputs x blocks x hidden) is flagged."""
        x = (states[:, self.block] - self.mean) / self.scale
        flagged: torch.Tensor = x @ self.weight + self.bias > 0
        return flagged


def fit_probes(states: torch.Tensor, labels: torch.Tensor, *, steps: int, seed: int) -> list[Probe]:
    """One probe per block, trained together (each block's weights see only its own loss): full-batch Adam
    on the class-balanced logistic loss with a small L2 penalty, seeded and deterministic."""
    import torch

    torch.manual_seed(seed)
    mean, scale = states.mean(0), states.std(0, unbiased=False).clamp_min(1e-6)
    x = (states - mean) / scale
    positives = float(labels.sum())
    balance = torch.where(labels > 0, 0.5 / positives, 0.5 / (len(labels) - positives)).unsqueeze(1)
    targets = labels.unsqueeze(1).expand(-1, states.shape[1])
    weight = torch.zeros(states.shape[1:], requires_grad=True)
    bias = torch.zeros(states.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("nbh,bh->nb", x, weight) + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets, weight=balance.expand_as(logits), reduction="sum"
            )
            loss = loss + 1e-3 * weight.square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [
        Probe(block, mean[block], scale[block], weight[block].detach(), float(bias[block].detach()))
        for block in range(states.shape[1])
    ]


def held_out_split(labels: torch.Tensor, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices to train on and to hold out: ``share`` of each class (at least one each), seeded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    train, held = [], []
    for value in (0.0, 1.0):
        members = torch.nonzero(labels == value).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = max(1, round(len(members) * share))
        held.append(members[:cut])
        train.append(members[cut:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


@dataclass(frozen=True)
class Router:
    """The trained probe and what reports show of it."""

    probe: Probe
    #: Percent of the held-out inputs the probe classifies right.
    accuracy: float
    #: Percent of the suite's harmless inputs the probe flags (they would go through the edit).
    harmless_routed: float
    harmless: int
    attack: int
    #: Seconds to compute the inputs' hidden states and train the probes (once per suite).
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.probe.block,
            "probe_accuracy": self.accuracy,
            "harmless_routed": self.harmless_routed,
            "harmless_inputs": self.harmless,
            "attack_inputs": self.attack,
            "probe_seconds": self.seconds,
        }


def train_router(states: torch.Tensor, labels: torch.Tensor, *, held_out: float, steps: int, seed: int) -> Router:
    """One probe per block on the training part; the block whose probe is most accurate on the held-out
    part wins (ties: the block nearest the middle), and its probe is retrained on every input. The reported
    accuracy is the winner's on the held-out part (optimistic by the choice among blocks)."""

    if labels.sum() < 2 or (labels == 0).sum() < 2:
        raise RoutingError("the routed editor needs at least two attack and two harmless inputs in the suite")
    train, held = held_out_split(labels, held_out, seed)
    blocks = states.shape[1]
    best: tuple[float, float, Probe] | None = None
    for block, probe in enumerate(fit_probes(states[train], labels[train], steps=steps, seed=seed)):
        correct = probe.harmful(states[held]) == (labels[held] > 0)
        accuracy = float(correct.float().mean())
        rank = (accuracy, -abs(block - (blocks - 1) / 2))
        if best is None or rank > best[:2]:
            best = (*rank, probe)
    assert best is not None
    # The block and the reported accuracy come from the held-out part; the probe that routes is then
    # trained on every input, as the suite's own inputs are the ones it routes.
    block = best[2].block
    probe = replace(fit_probes(states[:, block : block + 1], labels, steps=steps, seed=seed)[0], block=block)
    harmless = states[labels == 0]
    routed = float(probe.harmful(harmless).float().mean())
    return Router(probe, round(100 * best[0], 2), round(100 * routed, 2), len(harmless), int(labels.sum()))


class Routed:
    """DINM's edit of the toxic layer's MLP output projection, used only for inputs a probe flags.

    The probe is a logistic regression on one block's mean hidden state (over the formatted prompt's
    tokens), trained once per suite on the suite's attack inputs (every attack probe's text, the bare
    questions of DG_onlyQ included) against its harmless inputs (benign questions, knowledge prompts).
    Its block is the one whose probe is most accurate on a held-out part of those inputs, not DINM's
    localisation: the toxic layer is where the safe and unsafe *responses* differ most, while routing
    must tell *inputs* apart before any response exists, and the best block for that is found by
    measuring it. Ties go to the block nearest the middle, where the paper probes. Flagged inputs are
    answered with the case's DINM edit (suffix prompt, edited weight); unflagged ones by the unedited
    model with the unedited prompt, so their answers equal the unedited model's.

    Args:
        held_out: the share of each class held out to choose the block and report its accuracy.
        probe_steps: optimizer steps of the probes (every block's at once).
        seed: the seed of the split and of training.
        The rest: DINM's (see :class:`pytest_safeedit.editors.dinm.DINM`).
    """

    name = "routed"
    single_weight = True

    def __init__(self, *, held_out: float, probe_steps: int, seed: int, **dinm: Any) -> None:
        self.dinm = DINM(**dinm)
        self.held_out, self.probe_steps, self.seed = held_out, probe_steps, seed
        self.router: Router | None = None
        self._states: dict[str, torch.Tensor] = {}

    def prompt(self, text: str) -> tuple[str, str | None]:
        return self.dinm.prompt(text)

    def edit(self, model: LoadedModel, case: Case) -> AbstractContextManager[EditDetails]:
        return self.dinm.edit(model, case)

    def states(self, model: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
        """Mean hidden states of ``texts`` (inputs x blocks x hidden), each text computed once."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._states))
        if missing:
            self._states.update(zip(missing, mean_states(model, missing)))
        return torch.stack([self._states[t] for t in texts])

    def fit(self, model: LoadedModel, attack: Sequence[str], harmless: Sequence[str]) -> dict[str, Any]:
        """Train the probe once (later calls return the first probe's report)."""
        import torch

        if self.router is None:
            clock = Stopwatch()
            attack, harmless = list(dict.fromkeys(attack)), list(dict.fromkeys(harmless))
            known = set(attack)
            harmless = [t for t in harmless if t not in known]
            states = self.states(model, [*attack, *harmless])
            labels = torch.tensor([1.0] * len(attack) + [0.0] * len(harmless))
            router = train_router(states, labels, held_out=self.held_out, steps=self.probe_steps, seed=self.seed)
            self.router = replace(router, seconds=clock.seconds())
        return self.router.to_dict()

    def flags(self, model: LoadedModel, texts: Sequence[str]) -> list[bool]:
        """Whether each input goes through the edit (after :meth:`fit`)."""
        if self.router is None:
            raise RoutingError("the routed editor's probe is not trained yet; call fit first")
        if not texts:
            return []
        return [bool(f) for f in self.router.probe.harmful(self.states(model, texts))]


ROUTED_SPEC = EditorSpec(
    "routed",
    Routed,
    defaults={**DINM_SPEC.defaults, "held_out": 0.25, "probe_steps": 100, "seed": 0},
    description="DINM's edit, applied only to inputs that a hidden-state probe flags as harmful",
)


# ---------------------------------------------------------------------- a routed checkpoint

#: The file of a repaired checkpoint that routes: the probe, and the original value of every weight the
#: repair changed (the checkpoint's own weights are the edited ones).
ROUTING_FILE = "safeedit_routing.safetensors"
ORIGINAL = "original."


def save_routing(folder: Path, probe: Probe, originals: Mapping[str, torch.Tensor]) -> None:
    """Write ``folder``/ROUTING_FILE: the probe (block, standardization, weights, bias) and ``originals``
    (parameter name -> its value before the repair)."""
    from safetensors.torch import save_file

    tensors = {
        "probe.mean": probe.mean.float().contiguous(),
        "probe.scale": probe.scale.float().contiguous(),
        "probe.weight": probe.weight.float().contiguous(),
    }
    tensors.update({ORIGINAL + name: value.detach().cpu().contiguous() for name, value in originals.items()})
    save_file(tensors, str(folder / ROUTING_FILE), metadata={"block": str(probe.block), "bias": repr(probe.bias)})


def load_routing(folder: Path) -> tuple[Probe, dict[str, torch.Tensor]]:
    """The probe and the original weights of a routed checkpoint; a ValueError names what is wrong."""
    from safetensors import safe_open

    path = folder / ROUTING_FILE
    try:
        with safe_open(str(path), framework="pt") as data:
            meta = data.metadata() or {}
            tensors = {key: data.get_tensor(key) for key in data.keys()}  # noqa: SIM118 - not a dict
        probe = Probe(
            int(meta["block"]),
            tensors.pop("probe.mean"),
            tensors.pop("probe.scale"),
            tensors.pop("probe.weight"),
            float(meta["bias"]),
        )
    except Exception as exc:  # noqa: BLE001 - safetensors' own error types included: one message
        raise ValueError(
            f"{path} is not a routing file written by --safeedit-repair ({type(exc).__name__}: {exc}); "
            "repair again, or delete the file to load the checkpoint without routing"
        ) from None
    originals = {key.removeprefix(ORIGINAL): value for key, value in tensors.items() if key.startswith(ORIGINAL)}
    return probe, originals


@contextmanager
def weights_swapped(
    model: Any, values: Mapping[str, torch.Tensor], swapped_in: dict[tuple[str, int], int] | None = None
) -> Iterator[None]:
    """Parameters named in ``values`` hold those values inside; their own values are back on exit (and said
    to be, :func:`~pytest_safeedit.backends.stored.mark_restored`). ``swapped_in``: the same ``values``
    swapped in before, the version each parameter had then (kept here), so that the prefixes the
    generation kept for them serve again too."""
    params = dict(model.named_parameters())
    missing = sorted(set(values) - set(params))
    if missing:
        raise ValueError(f"the routing file names weights the model does not have: {', '.join(missing[:3])}")
    own = {name: params[name].detach().clone() for name in values}
    versions = {name: params[name]._version for name in values}
    try:
        assign_weights(model, values)
        seen = swapped_in if swapped_in is not None else {}
        for name in values:
            param, key = params[name], (name, tensor_number(params[name]))
            if key in seen:
                mark_restored(param, seen[key])
            else:
                seen[key] = param._version
        yield
    finally:
        assign_weights(model, own, restoring=versions)  # the kept prefixes of the original weights serve again


class RoutedGenerator:
    """A repaired checkpoint that routes, answering as the routed editor did: inputs its probe flags (on the
    original weights' hidden states) get the repaired weights, the others the original ones.

    Wraps the generator of the checkpoint's folder (whose weights are the repaired ones) and its routing
    file (see :func:`save_routing`)."""

    answers_row_weights = False

    def __init__(self, inner: Any, folder: Path) -> None:
        self.inner = inner
        self.folder = folder
        self.probe, self.originals = load_routing(folder)
        #: Each original weight's version when first swapped in (the same values every time).
        self._swapped_in: dict[tuple[str, int], int] = {}

    def identity(self) -> str | None:
        identity: str | None = self.inner.identity()  # the folder's content, the routing file included
        return identity

    def flags(self, model: LoadedModel, texts: Sequence[str]) -> list[bool]:
        with weights_swapped(model.model, self.originals, self._swapped_in):
            states = mean_states(model, texts)
        return [bool(f) for f in self.probe.harmful(states)]

    def generate(self, requests: Sequence[Any]) -> list[str]:
        if not requests:
            return []
        model = self.inner.editable(requests[0].settings)
        flagged = self.flags(model, [r.text for r in requests])
        out: list[str] = [""] * len(requests)
        routed = [i for i, f in enumerate(flagged) if f]
        kept = [i for i, f in enumerate(flagged) if not f]
        for index, text in zip(routed, self.inner.generate([requests[i] for i in routed])):
            out[index] = text
        if kept:
            with weights_swapped(model.model, self.originals, self._swapped_in):
                answers = self.inner.generate([requests[i] for i in kept])
            for index, text in zip(kept, answers):
                out[index] = text
        return out

    def editable(self, settings: Any) -> Any:
        return self.inner.editable(settings)

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = self.inner.metadata()
        data["routing"] = {"block": self.probe.block, "weights": sorted(self.originals), "file": ROUTING_FILE}
        return data


def is_routed_checkpoint(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a folder with a routing file (a repaired checkpoint of the routed editor)."""
    return (Path(name_or_path) / ROUTING_FILE).is_file()


def routed_checkpoint(generator: Any, name_or_path: str) -> Any:
    """``generator`` wrapped in a :class:`RoutedGenerator` for a routed checkpoint, else ``generator`` itself."""
    return RoutedGenerator(generator, Path(name_or_path)) if is_routed_checkpoint(name_or_path) else generator
