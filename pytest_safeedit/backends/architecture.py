"""Finding transformer blocks and each block's MLP output projection from the module structure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_ATTENTION_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward", "fc")


class ArchitectureError(Exception):
    """The model's structure has no part that an editor needs."""


@dataclass(frozen=True)
class Projection:
    """The MLP output projection of one block: its qualified name, module and weight."""

    layer: int
    name: str
    module: Any

    @property
    def weight(self) -> torch.nn.Parameter:
        weight: torch.nn.Parameter = self.module.weight
        return weight


def config_int(config: Any, *names: str) -> int | None:
    """The first of ``names`` the config (or its text config) sets to a positive integer."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None and text_config is not config:
        return config_int(text_config, *names)
    return None


def hidden_size(model: Any) -> int:
    size = config_int(model.config, "hidden_size", "n_embd", "d_model", "word_embed_proj_dim")
    if size is None:
        raise ArchitectureError(f"cannot tell the hidden size of {type(model).__name__} from its config")
    return size


def transformer_blocks(model: Any) -> Any:
    """The ModuleList of transformer blocks: the largest list of same-class modules, one per layer."""
    import torch

    layers = config_int(model.config, "num_hidden_layers", "n_layer", "num_layers")
    best = None
    best_size = -1
    for module in model.modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if layers is not None and len(module) != layers:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = module, size
    if best is None:
        raise ArchitectureError(
            f"{type(model).__name__}: no list of transformer blocks found"
            + (f" with {layers} entries (config num_hidden_layers)" if layers else "")
        )
    return best


def _in_out(module: Any) -> tuple[int, int] | None:
    """Input and output width of a linear map (nn.Linear, or GPT-2's transposed Conv1D)."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def mlp_output_projection(model: Any, layer: int) -> Projection:
    """The linear map that takes a block's MLP back from its inner width to the hidden size.

    It is found from the structure: inside block ``layer``, outside attention, a linear map whose
    output width is the hidden size and whose input width is not. GPT-2 ``mlp.c_proj``, Llama/Mistral/
    Qwen2/Gemma ``mlp.down_proj``, GPT-NeoX ``mlp.dense_4h_to_h``, OPT ``fc2``, Phi ``mlp.fc2``.
    """
    blocks = transformer_blocks(model)
    if not -len(blocks) <= layer < len(blocks):
        raise ArchitectureError(f"layer {layer} is out of range: {type(model).__name__} has {len(blocks)} blocks")
    layer %= len(blocks)
    hidden = hidden_size(model)
    block = blocks[layer]
    candidates = []
    for name, module in block.named_modules():
        shape = _in_out(module)
        parts = name.lower().split(".")
        if shape is None or any(w in part for part in parts for w in _ATTENTION_WORDS):
            continue
        if shape[1] == hidden and shape[0] != hidden:
            candidates.append(name)
    if len(candidates) > 1:
        preferred = [n for n in candidates if any(w in n.lower() for w in _MLP_WORDS)]
        candidates = preferred if len(preferred) == 1 else candidates
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise ArchitectureError(
            f"{type(model).__name__}: cannot find the MLP output projection of block {layer} "
            f"(a linear map from the MLP width to the hidden size {hidden}; candidates: {found}); "
            "this architecture is not supported by the editor"
        )
    name = candidates[0]
    prefix = qualified_prefix(model, blocks)
    return Projection(layer=layer, name=f"{prefix}.{layer}.{name}", module=block.get_submodule(name))


def qualified_prefix(model: Any, blocks: Any) -> str:
    """The qualified name of ``blocks`` in ``model`` (block ``i`` is ``{name}.{i}``)."""
    for name, module in model.named_modules():
        if module is blocks:
            return str(name)
    return "blocks"


def block_count(model: Any) -> int:
    return len(transformer_blocks(model))
