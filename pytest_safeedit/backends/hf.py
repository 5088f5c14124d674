"""The Hugging Face backend: a causal LM loaded in this process, prompts formatted with its chat template,
greedy batched generation, and the :class:`HFGenerator` that serves requests from it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pytest_safeedit.backends.architecture import transformer_blocks
from pytest_safeedit.backends.base import Request, sample_seed
from pytest_safeedit.backends.batching import MAX_PAD_SHARE, BatchLimits, token_batches
from pytest_safeedit.backends.below import blocks_replayed, lowest_edited_block, run_below
from pytest_safeedit.backends.prefix import MIN_SHARED_TOKENS, PrefixPlan, plan_prefixes, with_stored
from pytest_safeedit.backends.rows import RowWeights, rows_present
from pytest_safeedit.backends.stored import Beneath, Kept, PrefixStore, sliced_states, weights_state
from pytest_safeedit.config.settings import (
    CPU_BATCH_SIZE,
    DEFAULT_PREFIX_CACHE_MB,
    GenerationSettings,
    ModelSettings,
    default_batch_tokens,
    is_gguf,
)

#: Tokens generated between two prunings of the rows that have ended (see :meth:`LoadedModel.generate`).
PRUNE_EVERY = 4
#: New tokens a batch's cache makes room for at a time (:mod:`pytest_safeedit.backends.reserved`): a longer
#: answer grows it by as many again (one copy of the cache per this many steps, not one per step), and
#: rows that end early never hold room for the longest answer there could be.
ROOM_TOKENS = 64
#: Fields of a model's generation config that every stretch of pruned generation sees as one ``generate``
#: call does: we set them, greedy decoding ignores them (sampling, beams, assistants), they only shape
#: the outputs or the cache, or they read the whole sequence so far (the penalties, banned and biased
#: tokens, the minimum total length). Tested against one call.
STRETCH_SAFE_FIELDS = frozenset(
    {
        *("do_sample", "num_beams", "num_return_sequences", "max_new_tokens", "max_length", "return_dict_in_generate"),
        *("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id"),
        *("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens", "sequence_bias"),
        *("min_length", "renormalize_logits", "remove_invalid_values"),
        *("temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff"),
        *("early_stopping", "length_penalty", "num_beam_groups", "diversity_penalty"),
        *("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"),
        *("assistant_lookbehind", "target_lookbehind", "max_matching_ngram_size"),
        *("use_cache", "cache_config", "max_cache_len", "compile_config", "disable_compile"),
        *("output_attentions", "output_hidden_states", "output_scores", "output_logits"),
        *("continuous_batching_config", "transformers_version"),
    }
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    #: The keys and values of each layer of a one-row cache.
    States = list[tuple[torch.Tensor, torch.Tensor]]


class LoadedModel:
    """A causal LM, its tokenizer and the generation settings of the run."""

    def __init__(
        self,
        model: PreTrainedModel | Callable[[], PreTrainedModel],
        tokenizer: PreTrainedTokenizerBase,
        settings: ModelSettings,
        config: Any = None,
    ) -> None:
        """``model`` may be a loader: the weights then load on first use, so that a run whose
        responses all come from the cache never loads them."""
        if callable(model) and not hasattr(model, "parameters"):
            self._loader: Callable[[], PreTrainedModel] | None = model
            self._model: PreTrainedModel | None = None
        else:
            self._loader = None
            self._model = cast("PreTrainedModel", model)
        self.config = config if config is not None else cast(Any, self._model).config
        self.tokenizer = tokenizer
        self.settings = settings
        if tokenizer.pad_token_id is None and tokenizer.eos_token is None:
            raise ValueError(
                f"the tokenizer of {settings.name_or_path!r} has neither a pad token nor an EOS token, so "
                "batches cannot be padded and answers cannot end; set 'eos_token' (and 'pad_token') in the "
                "folder's tokenizer_config.json"
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.max_input_tokens = settings.max_input_tokens
        #: Whether computing a prefix below and above the lowest edited block in two passes gave exactly
        #: the keys and values of one pass, the first time it was tried (shared by the views of this model).
        self._split_exact: dict[str, bool] = {}
        #: The prefixes kept from one call to the next (shared by the views of this model).
        self.prefix_store = PrefixStore()
        self.use_chat_template = settings.chat_template == "on" or (
            settings.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))
        )
        if settings.chat_template == "on" and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"--safeedit-chat-template=on, but the tokenizer of {settings.name_or_path!r} has no chat "
                "template; use 'auto' or 'off'"
            )

    @property
    def model(self) -> PreTrainedModel:
        """The weights, loaded on first use."""
        if self._model is None:
            assert self._loader is not None
            self._model = self._loader()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_input_limit(self, max_input_tokens: int | None) -> LoadedModel:
        """The same model and tokenizer with another input limit (None: the context less the new tokens).

        The weights load first, so that the view and this object share them (an edit through one is seen
        by the other)."""
        self.model  # noqa: B018 - loads the weights
        view = copy.copy(self)
        view.max_input_tokens = max_input_tokens
        return view

    def input_budget(self, max_new_tokens: int) -> int:
        """Longest input kept (its right end): the limit, else the context length less the new tokens."""
        if self.max_input_tokens:
            return self.max_input_tokens
        config = self.config
        context = None
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                context = value
                break
        if context is None:
            context = min(int(getattr(self.tokenizer, "model_max_length", 2048) or 2048), 32768)
        return max(16, context - max_new_tokens)

    def _render(self, text: str, system: str | None) -> str:
        if not self.use_chat_template:
            return text if system is None else f"{system}\n\n{text}"
        messages = [{"role": "user", "content": text}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def format_prompt(self, text: str, system: str | None = None, *, max_new_tokens: int = 128) -> str:
        """The exact model input for a probe: the chat template applied if used, and, when too long,
        the user text cut so that its right end (where the question is) is kept."""
        rendered = self._render(text, system)
        budget = self.input_budget(max_new_tokens)
        if len(self.tokenizer(rendered, add_special_tokens=False)["input_ids"]) <= budget:
            return rendered
        overhead = len(self.tokenizer(self._render("", system), add_special_tokens=False)["input_ids"])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = max(1, budget - overhead - 2)
        return self._render(str(self.tokenizer.decode(ids[-keep:])), system)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_id(self) -> int | None:
        eos = self.tokenizer.eos_token_id
        return None if eos is None else int(eos)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain text, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, text: str, system: str | None, *, reserve: int) -> list[int]:
        """Token ids of a formatted probe, as generation sees them, leaving room for ``reserve`` tokens."""
        prompt = self.format_prompt(text, system, max_new_tokens=reserve)
        ids = self.tokenizer(prompt, add_special_tokens=not self.use_chat_template)["input_ids"]
        return list(ids)[-self.input_budget(reserve) :]

    def encode(self, prompts: Sequence[str], max_new_tokens: int) -> dict[str, torch.Tensor]:
        """Left-padded batch of formatted prompts, truncated on the left to the input budget."""
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(
            list(prompts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.input_budget(max_new_tokens),
            add_special_tokens=not self.use_chat_template,
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def _generation_config(self, max_new_tokens: int, **sampling: Any) -> Any:
        from transformers import GenerationConfig

        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        fixed: dict[str, Any] = {"do_sample": bool(sampling), "num_beams": 1, "num_return_sequences": 1}
        return GenerationConfig(
            **{**fixed, **sampling},
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos,
        )

    def sample(
        self, prompt: str, *, max_new_tokens: int, count: int, temperature: float, top_p: float, seed: int
    ) -> list[str]:
        """``count`` sampled responses to one formatted prompt, drawn in one call after seeding with
        ``seed``: the same seed gives the same samples, whatever else the run generates."""
        import torch

        config = self._generation_config(
            max_new_tokens, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=count
        )
        enc = self.encode([prompt], max_new_tokens)
        torch.manual_seed(seed)
        self.model.eval()
        with torch.no_grad():
            generated = cast(Any, self.model).generate(**enc, generation_config=config, tokenizer=self.tokenizer)
        return list(self.tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))

    def token_rows(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """The token ids of formatted prompts as :meth:`encode` gives them, unpadded."""
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(
            list(prompts),
            truncation=True,
            max_length=self.input_budget(max_new_tokens),
            add_special_tokens=not self.use_chat_template,
        )
        return [list(ids) for ids in enc["input_ids"]]

    def padded(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Token id rows as a left-padded batch (ids and attention mask) on the model's device."""
        import torch

        width = max(len(row) for row in rows)
        ids = [[self.pad_id] * (width - len(row)) + list(row) for row in rows]
        mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long, device=self.device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=self.device),
        }

    def batch_limits(
        self, batch_size: int | None, batch_tokens: int | None, max_new_tokens: int, pad_share: float = MAX_PAD_SHARE
    ) -> BatchLimits:
        """What one generation batch may hold: ``batch_size`` rows (default :data:`CPU_BATCH_SIZE`),
        ``batch_tokens`` padded prompt tokens (default: the device's), ``pad_share`` of padding, and on the
        CPU a KV cache within a quarter of the memory (:meth:`cache_token_budget`)."""
        return BatchLimits(
            rows=batch_size or CPU_BATCH_SIZE,
            tokens=batch_tokens or default_batch_tokens(self.device.type),
            cache_tokens=self.cache_token_budget(),
            reserve=max_new_tokens,
            pad_share=pad_share,
        )

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int | None = None,
        batch_tokens: int | None = None,
        pad_share: float = MAX_PAD_SHARE,
        prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB,
        prune: bool = True,
        row_weights: RowWeights | None = None,
    ) -> list[str]:
        """Greedy responses (new tokens only) to formatted prompts, in order.

        Prompts that share a long token prefix (the chat template's preamble, an attack template) start
        from its keys and values, computed once (:mod:`pytest_safeedit.backends.prefix`; at most
        ``prefix_cache_mb`` MB of them kept, 0: none; see :meth:`prefix_plan` for the models that cannot
        branch a cache) and kept for later calls with the same weights
        (:mod:`pytest_safeedit.backends.stored`, the least recently used dropped first); a model edited from
        some block up (in place, or the rows' weights) reads the unedited model's below that block and
        computes only the blocks from it up (:meth:`_beneath_finder`). The prompts are
        sorted by the tokens left to compute and cut into batches of at most ``batch_size`` rows and
        ``batch_tokens`` padded prompt tokens, each with at most ``pad_share``
        of padding (:mod:`pytest_safeedit.backends.batching`; on the CPU also a KV cache within a quarter of the
        memory). Each batch is generated ``PRUNE_EVERY`` tokens at a time, continuing from the KV cache
        (whose plain layers hold room for the batch's tokens, written in place:
        :mod:`pytest_safeedit.backends.reserved`); between two stretches the rows that have ended leave the
        batch (their cache rows too), so that the rest run on fewer rows. A row's tokens do not depend on the other rows nor on its prefix being
        shared (greedy, padded; tested). ``prune=False``, or a model whose generation config sets what a
        stretch would restart (:func:`stretch_sensitive`): one ``generate`` call per batch, every row to
        the end of the longest (what a plain batched loop does; the benchmarks' baselines). The rows of a
        batch keep their numbers in ``prompts`` for ``row_weights`` (several cases' edited weights, one per
        row: :func:`~pytest_safeedit.backends.rows.row_weights`); rows of several edited weights share a
        prefix below the lowest edited block (:meth:`shared_below`)."""
        if not prompts:
            return []
        self.model.eval()
        ids = self.token_rows(prompts, max_new_tokens)
        limits = self.batch_limits(batch_size, batch_tokens, max_new_tokens, pad_share)
        prune = prune and not stretch_sensitive(self.model.generation_config)
        keys: list[Hashable] = [None] * len(ids) if row_weights is None else row_weights.weight_keys(len(ids))
        below = self.shared_below(row_weights, keys)
        plan = self.prefix_plan(ids, max_new_tokens, prefix_cache_mb, row_weights, below)
        store = self._store_for(ids, max_new_tokens, prefix_cache_mb, row_weights)
        if store is not None:
            plan = with_stored(plan, ids, [store.longest(row)[0] for row in ids])
        finder = self._beneath_finder(ids, max_new_tokens, prefix_cache_mb, row_weights)
        caches = self._prefill_prefixes(ids, plan, keys, row_weights, below, store, prefix_cache_mb * 1_000_000, finder)
        if caches is None and plan.across:  # two passes were not exact here: each group's prefixes whole
            plan = self.prefix_plan(ids, max_new_tokens, prefix_cache_mb, row_weights)
            caches = self._prefill_prefixes(ids, plan, keys, row_weights)
        if caches is None:
            plan = PrefixPlan((), (None,) * len(ids))
        shared = [plan.shared(row) for row in range(len(ids))]
        out = [""] * len(prompts)
        for batch in token_batches([len(row) for row in ids], limits, shared):
            enc, cache = self._batch_inputs(ids, batch, plan, caches or [], keys, max_new_tokens)
            tokens = self._generate_batch(enc, batch, max_new_tokens, prune, cache, row_weights)
            for index, text in zip(batch, self.tokenizer.batch_decode(tokens, skip_special_tokens=True)):
                out[index] = text
        return out

    def prefix_plan(
        self,
        ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        prefix_cache_mb: int,
        row_weights: RowWeights | None = None,
        below: int = 0,
    ) -> PrefixPlan:
        """The shared prefixes of prompts ``ids`` to prefill once, within ``prefix_cache_mb`` MB of keys
        and values; rows that run with other edited weights share only among themselves, unless every
        edited weight is in block ``below`` or above (:meth:`shared_below`): then rows of all weights share
        a prefix, computed below that block once and above it once per weight.

        None are shared (plain prefill) with a budget of 0, where the config does not give the cache's
        size, or where a cache cannot be branched safely: an encoder-decoder, a generation config that asks
        for another cache (static, quantized, offloaded) or for none (``use_cache`` false), or a cache layer
        other than the plain dynamic one (a sliding-window layer only when its window holds the whole batch,
        recurrent states never)."""
        per_token = kv_cache_bytes_per_token(self.config, self.model.dtype.itemsize)
        if per_token is None or not self._shares_prefixes(ids, max_new_tokens, prefix_cache_mb):
            return PrefixPlan((), (None,) * len(ids))
        budget = prefix_cache_mb * 1_000_000 // per_token
        groups = None if row_weights is None else row_weights.weight_keys(len(ids))
        share = below / len(transformer_blocks(self.model)) if below else None
        return plan_prefixes(ids, budget=budget, groups=groups, below=share)

    def _shares_prefixes(self, ids: Sequence[Sequence[int]], max_new_tokens: int, prefix_cache_mb: int) -> bool:
        """Whether prompts ``ids`` may start from prefixes computed apart (see :meth:`prefix_plan`)."""
        width = 2 * max(len(row) for row in ids) + max_new_tokens
        per_token = kv_cache_bytes_per_token(self.config, self.model.dtype.itemsize)
        return bool(prefix_cache_mb) and per_token is not None and self._branchable(width)

    def _store_for(
        self,
        ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        prefix_cache_mb: int,
        row_weights: RowWeights | None,
    ) -> PrefixStore | None:
        """The prefixes kept from earlier calls, where this call (of prompts ``ids``) may read and add to
        them: every row with the model's own weights, prefixes shared, the model in the state they were
        kept in (:meth:`~pytest_safeedit.backends.stored.PrefixStore.open`). A budget of 0 empties it."""
        if not prefix_cache_mb:
            self.prefix_store.clear()
            return None
        if row_weights is not None or not self._shares_prefixes(ids, max_new_tokens, prefix_cache_mb):
            return None
        return self.prefix_store if self.prefix_store.open(self.model) else None

    def shared_below(self, row_weights: RowWeights | None, keys: Sequence[Hashable]) -> int:
        """The blocks whose keys and values rows of every edited weight compute alike: those below the lowest
        block an edited weight of ``row_weights`` is in (0: none to share).

        None are shared, and each weight's rows share prefixes only among themselves, where that cannot be
        exact or brings nothing: without row weights or with the rows (``keys``: each row's weights) all of
        one weight (a single edit, answered alone: one weight group, nothing to share across); with an
        edited module outside the transformer blocks or in the first; with a cache whose layers are not
        one per block; and after computing a prefix in two passes (below, then above, the blocks below
        handing on their output: :mod:`pytest_safeedit.backends.below`) once gave other keys and values than
        one pass (an architecture whose blocks read more than the block below's output)."""
        from transformers.cache_utils import DynamicCache

        from pytest_safeedit.backends.architecture import ArchitectureError, qualified_prefix

        if row_weights is None or len(set(keys)) < 2 or self._split_exact.get("below") is False:
            return 0
        try:
            blocks = transformer_blocks(self.model)
            layers = len(DynamicCache(config=self.model.config).layers)
        except (ArchitectureError, TypeError, ValueError, KeyError, AttributeError):
            return 0
        if layers != len(blocks):
            return 0
        lowest = lowest_edited_block(qualified_prefix(self.model, blocks), len(blocks), row_weights.modules)
        return lowest or 0

    def _beneath_finder(
        self,
        ids: Sequence[Sequence[int]],
        max_new_tokens: int,
        prefix_cache_mb: int,
        row_weights: RowWeights | None,
    ) -> Callable[[Sequence[int], Hashable], Beneath | None] | None:
        """Where this call (of prompts ``ids``) may start prefixes from those kept for another state of the
        weights that equals its rows' weights below some block (:meth:`PrefixStore.beneath`): a function
        of a prefix's tokens and a row's weight group (its :class:`RowWeights` key, None: the model's own)
        that gives the kept part. None where nothing is kept, prefixes are not shared, the cache's layers
        are not one per block, a module has a hook or a forward of its own other than the rows', or two
        passes (below a block, then from it up) once gave other keys and values than one."""
        from transformers.cache_utils import DynamicCache

        from pytest_safeedit.backends.architecture import ArchitectureError, qualified_prefix

        store = self.prefix_store
        if not len(store) or self._split_exact.get("below") is False:
            return None
        if not self._shares_prefixes(ids, max_new_tokens, prefix_cache_mb):
            return None
        try:
            blocks = transformer_blocks(self.model)
            layers = len(DynamicCache(config=self.model.config).layers)
        except (ArchitectureError, TypeError, ValueError, KeyError, AttributeError):
            return None
        state = weights_state(self.model, row_hooks=row_weights is not None)
        if layers != len(blocks) or state is None:
            return None
        name, count = qualified_prefix(self.model, blocks), len(blocks)

        def lowest(names: Sequence[str]) -> int:
            if not names:
                return count
            found = lowest_edited_block(name, count, names)
            return 0 if found is None else found

        levels = store.levels(state, lowest)
        by_group: dict[Hashable, dict[int, int]] = {}

        def find(tokens: Sequence[int], group: Hashable) -> Beneath | None:
            if group not in by_group:
                edited = count if group is None else lowest([cast(tuple[str, int], group)[0] + "."])
                by_group[group] = {number: min(level, edited) for number, level in levels.items()}
            return store.beneath(tokens, by_group[group])

        return find

    def _branchable(self, width: int) -> bool:
        """Whether this model's cache is the dynamic cache of plain layers, so that rows can be copied
        into a batch's cache (a sliding-window layer counts when its window exceeds ``width``)."""
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

        if getattr(self.config, "is_encoder_decoder", False):
            return False
        if getattr(self.model.generation_config, "cache_implementation", None) not in (None, "dynamic"):
            return False
        if self.model.generation_config.use_cache is False or getattr(self.config, "use_cache", True) is False:
            return False  # each step feeds the whole sequence again: a cache handed in would grow wrong
        try:
            layers = DynamicCache(config=self.model.config).layers
        except (TypeError, ValueError, KeyError, AttributeError):
            return False
        return bool(layers) and all(
            type(layer) is DynamicLayer or (type(layer) is DynamicSlidingWindowLayer and layer.sliding_window > width)
            for layer in layers
        )

    def _prefill_prefixes(
        self,
        ids: Sequence[Sequence[int]],
        plan: PrefixPlan,
        keys: Sequence[Hashable],
        row_weights: RowWeights | None = None,
        below: int = 0,
        store: PrefixStore | None = None,
        store_bytes: int = 0,
        finder: Callable[[Sequence[int], Hashable], Beneath | None] | None = None,
    ) -> list[dict[Hashable, States]] | None:
        """Each prefix's keys and values (one row, per layer), computed on its parent's, for each weight
        group (``keys``: each row's) that starts from it; None when a forward pass gives a cache that is not
        the plain dynamic cache (then nothing is shared), or, for a plan ``across`` groups, when the blocks
        below ``below`` cannot be run apart (:meth:`_prefill_across`). With a ``store`` (of prefixes kept
        from earlier calls), a prefix starts from the longest kept one that holds more of its tokens than
        its parent (all of them: nothing to compute), and is then kept in it (``store_bytes`` at most), with
        the hidden states its blocks hand on where the store keeps them. With a ``finder``
        (:meth:`_beneath_finder`), a prefix that another state of the weights kept at least
        ``MIN_SHARED_TOKENS`` more of reads that below the block where the weights differ (:meth:`_from_beneath`)."""
        if plan.across:
            return self._prefill_across(ids, plan, keys, row_weights, below, finder)
        held: dict[int, Kept] = {}  # read first: what this call keeps must not push them out
        for index, prefix in enumerate(plan.prefixes):
            kept, key = (0, None) if store is None else store.longest(ids[prefix.row][: prefix.length])
            if store is not None and key is not None and kept == prefix.length:
                held[index] = store.kept(key, kept)
        capture = store is not None and store.keeps_hidden
        caches: list[dict[Hashable, States]] = []
        hiddens: list[list[torch.Tensor] | None] = []
        for index, prefix in enumerate(plan.prefixes):
            start = 0 if prefix.parent is None else plan.prefixes[prefix.parent].length
            group = keys[prefix.row]
            if index in held:
                caches.append({group: held[index].states})
                hiddens.append(held[index].hidden)
                continue
            parent = [] if prefix.parent is None else caches[prefix.parent][group]
            parent_hidden = None if prefix.parent is None else hiddens[prefix.parent]
            tokens = ids[prefix.row][: prefix.length]
            kept, key = (0, None) if store is None else store.longest(tokens)
            if store is not None and key is not None and kept > start:
                from_store = store.kept(key, kept)
                parent, parent_hidden, start = from_store.states, from_store.hidden, kept
            found = None if finder is None else finder(tokens, group)
            hidden = None
            if found is not None and reads_enough(found, len(tokens), start):
                states = self._from_beneath(parent, tokens, start, found, prefix.row, row_weights)
            elif capture:
                states, hidden = self._extend_capturing(parent, parent_hidden, tokens[start:], start, prefix.row)
            else:
                states = self._extend(parent, tokens[start:], start, prefix.row, row_weights)
            if states is None:
                return None
            if store is not None:
                store.put(tokens, states, store_bytes, hidden)
            caches.append({group: states})
            hiddens.append(hidden)
        return caches

    def _prefill_across(
        self,
        ids: Sequence[Sequence[int]],
        plan: PrefixPlan,
        keys: Sequence[Hashable],
        row_weights: RowWeights | None,
        below: int,
        finder: Callable[[Sequence[int], Hashable], Beneath | None] | None = None,
    ) -> list[dict[Hashable, States]] | None:
        """Each prefix through blocks ``0 .. below - 1`` once, then through the blocks from ``below`` up once
        for each weight group under it, those below handing on their output
        (:mod:`pytest_safeedit.backends.below`). The first time on this model, the first prefix is also
        computed in one pass and the keys and values compared (:meth:`_split_exact_here`): None if they
        differ, or if the forward pass never calls the last block below (then never again on this model).
        A prefix of which a ``finder``
        (:meth:`_beneath_finder`) gives each group a kept part starts from those instead
        (:meth:`_from_beneath`): each group then computes only the blocks from its own edited one up."""

        blocks = transformer_blocks(self.model)
        first_row = {key: row for row, key in reversed(list(enumerate(keys)))}
        lower: list[States] = []
        caches: list[dict[Hashable, States]] = []
        for prefix, groups in zip(plan.prefixes, plan.groups(keys)):
            start = 0 if prefix.parent is None else plan.prefixes[prefix.parent].length
            whole = ids[prefix.row][: prefix.length]
            found = {} if finder is None else {group: finder(whole, group) for group in groups}
            if found and all(f is not None and reads_enough(f, prefix.length, start) for f in found.values()):
                caches.append({})
                for group in groups:
                    parent = [] if prefix.parent is None else caches[prefix.parent][group]
                    states = self._from_beneath(
                        parent, whole, start, cast(Beneath, found[group]), first_row[group], row_weights
                    )
                    if states is None:
                        return None
                    caches[-1][group] = states
                lower.append(caches[-1][groups[0]][:below])
                continue
            tokens = whole[start:]
            first = groups[0]
            first_parent = [] if prefix.parent is None else caches[prefix.parent][first]
            if not self._split_exact_here(first_parent, tokens, start, first_row[first], row_weights, below):
                return None
            cache = self._cache_of([] if prefix.parent is None else lower[prefix.parent])
            output = run_below(blocks, below, partial(self._forward, cache, tokens, start, prefix.row))
            if output is None:  # the model never called the block: it cannot be run in two passes
                self._split_exact["below"] = False
                return None
            lower.append(list(layer_states(cache))[:below])
            caches.append({})
            for group in groups:
                parent = [] if prefix.parent is None else caches[prefix.parent][group]
                with blocks_replayed(blocks, below, output):
                    above = self._extend(parent, tokens, start, first_row[group], row_weights)
                if above is None:
                    return None
                caches[-1][group] = lower[-1] + above[below:]
        return caches

    def _from_beneath(
        self,
        parent: States,
        tokens: Sequence[int],
        start: int,
        found: Beneath,
        row: int,
        row_weights: RowWeights | None = None,
    ) -> States | None:
        """The keys and values of ``tokens`` (one row, per layer) with the weights of row ``row``, ``parent``
        holding the first ``start``: those of the layers below ``found.level`` read from ``found`` for as
        many tokens as it holds, the blocks from that level up computed from the hidden state entering it
        (the blocks below handing it on), the rest of the tokens computed whole. The first time on this
        model, the two passes are checked against one (:meth:`_split_exact_here`): None where they differ."""
        length = min(found.length, len(tokens))
        below = sliced_states(found.states, length)
        if found.entering is None:
            states: States = below
        else:
            blocks = transformer_blocks(self.model)
            if not self._split_exact_here(parent, tokens[start:length], start, row, row_weights, found.level):
                return None
            with blocks_replayed(blocks, found.level, found.entering[:, start:length]):
                above = self._extend(parent, tokens[start:length], start, row, row_weights)
            if above is None:
                return None
            states = below + above[found.level :]
        self.prefix_store.tokens_reused += length - start
        if length < len(tokens):
            return self._extend(states, tokens[length:], length, row, row_weights)
        return states

    def _split_exact_here(
        self, parent: States, tokens: Sequence[int], start: int, row: int, row_weights: RowWeights | None, level: int
    ) -> bool:
        """Whether a prefix computed in two passes (blocks ``0 .. level - 1``, then the blocks from ``level``
        up, those below handing on their output) gives exactly the keys and values of one pass, checked on
        ``tokens`` the first time on this model (and remembered: an architecture whose blocks read more
        than the output of the block below never splits)."""
        import torch

        if "below" in self._split_exact:
            return self._split_exact["below"]
        blocks = transformer_blocks(self.model)
        cache = self._cache_of(parent)
        output = run_below(blocks, level, partial(self._forward, cache, tokens, start, row, row_weights))
        split = None
        if output is not None:
            with blocks_replayed(blocks, level, output):
                above = self._extend(parent, tokens, start, row, row_weights)
            split = None if above is None else list(layer_states(cache))[:level] + above[level:]
        whole = self._extend(parent, tokens, start, row, row_weights)
        self._split_exact["below"] = (
            split is not None
            and whole is not None
            and len(whole) == len(split)
            and all(torch.equal(a, b) for pair in zip(whole, split) for a, b in zip(*pair))
        )
        return self._split_exact["below"]

    def _extend_capturing(
        self, parent: States, parent_hidden: list[torch.Tensor] | None, tokens: Sequence[int], start: int, row: int
    ) -> tuple[States | None, list[torch.Tensor] | None]:
        """:meth:`_extend` with the model's own weights, and the hidden states each block but the last hands
        on for all ``start + len(tokens)`` tokens (``parent_hidden``'s and the new ones'; None where the
        parent has none, or a block hands on something other than one ``[1, tokens, width]`` tensor)."""
        import torch

        from pytest_safeedit.backends.architecture import ArchitectureError

        try:
            blocks = list(transformer_blocks(self.model))[:-1]
        except ArchitectureError:
            return self._extend(parent, tokens, start, row), None
        outputs: list[list[Any]] = [[] for _ in blocks]

        def keeper(at: int) -> Callable[..., None]:
            def keep(_: Any, __: Any, output: Any) -> None:
                outputs[at].append(output)

            return keep

        handles = [block.register_forward_hook(keeper(at)) for at, block in enumerate(blocks)]
        try:
            states = self._extend(parent, tokens, start, row)
        finally:
            for handle in handles:
                handle.remove()
        plain = all(
            len(out) == 1 and isinstance(out[0], torch.Tensor) and tuple(out[0].shape[:2]) == (1, len(tokens))
            for out in outputs
        )
        if states is None or not plain or (start and parent_hidden is None):
            return states, None
        new = [out[0] for out in outputs]
        if start:
            new = [torch.cat([old[:, :start], part], dim=1) for old, part in zip(cast(list[Any], parent_hidden), new)]
        return states, new

    def _extend(
        self, parent: States, tokens: Sequence[int], start: int, row: int, row_weights: RowWeights | None = None
    ) -> States | None:
        """The keys and values of each layer (one row): ``parent``'s (empty: none) and those of ``tokens``
        at positions from ``start``, computed with the weights of row ``row``; None when the forward pass
        gives a cache that is not the plain dynamic cache."""
        from transformers.cache_utils import DynamicCache

        cache = self._forward(self._cache_of(parent), tokens, start, row, row_weights)
        return list(layer_states(cache)) if type(cache) is DynamicCache else None

    def _forward(
        self, cache: Any, tokens: Sequence[int], start: int, row: int, row_weights: RowWeights | None = None
    ) -> Any:
        """One row's forward pass over ``tokens`` at positions from ``start`` on top of ``cache``, with the
        weights of row ``row``: the cache it gives back."""
        import inspect

        import torch

        kwargs: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kwargs["logits_to_keep"] = 1  # the prefix's logits are never read
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(tokens), device=self.device).unsqueeze(0)
        with torch.no_grad(), rows_present(row_weights, [row]):
            out = cast(Any, self.model)(input_ids=ids, position_ids=positions, cache=cache, use_cache=True, **kwargs)
        return out.cache if hasattr(out, "cache") else out.past_key_values

    def _cache_of(self, states: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        """A dynamic cache for this model holding ``states`` (keys, values per layer; none: empty)."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (keys, values) in zip(cast(list[Any], cache.layers), states):
            layer.update(keys, values)
        return cache

    def _batch_inputs(
        self,
        ids: Sequence[Sequence[int]],
        batch: Sequence[int],
        plan: PrefixPlan,
        caches: Sequence[dict[Hashable, States]],
        keys: Sequence[Hashable],
        max_new_tokens: int,
    ) -> tuple[dict[str, torch.Tensor], Any]:
        """A batch's ids and mask, and the cache of its rows' prefixes (None: no row has one), each row's
        computed with its weights (``keys``: each row's group), with room for the fresh tokens and
        ``max_new_tokens`` (:mod:`pytest_safeedit.backends.reserved`).

        Row layout: padding, the row's prefix (right-aligned in the longest prefix's span), padding, its
        fresh tokens (right-aligned); the mask hides the padding and the positions count only real tokens,
        so each row sees exactly its own prompt."""
        import torch

        from pytest_safeedit.backends.reserved import ReservedLayer, reserved_cache

        span = max(plan.shared(i) for i in batch)
        if span == 0:
            return self.padded([ids[i] for i in batch]), None
        fresh = self.padded([ids[i][plan.shared(i) :] for i in batch])
        head = self.padded([ids[i][: plan.shared(i)] for i in batch])
        enc = {key: torch.cat([head[key], fresh[key]], dim=1) for key in fresh}
        own = [None if plan.of_row[row] is None else caches[cast(int, plan.of_row[row])][keys[row]] for row in batch]
        growth = min(max_new_tokens, ROOM_TOKENS)
        room = fresh["input_ids"].shape[1] + growth
        cache = reserved_cache(self.model.config, growth)
        first = next(s for s in own if s is not None)
        for index, (layer, (some_keys, some_values)) in enumerate(zip(cast(list[Any], cache.layers), first)):
            reserved = isinstance(layer, ReservedLayer)
            shape = (len(batch), some_keys.shape[1], span + (room if reserved else 0), some_keys.shape[3])
            batch_keys, batch_values = some_keys.new_zeros(shape), some_values.new_zeros(shape)
            for at, row_states in enumerate(own):
                if row_states is not None:
                    own_keys, own_values = row_states[index]
                    batch_keys[at, :, span - own_keys.shape[2] : span] = own_keys[0]
                    batch_values[at, :, span - own_values.shape[2] : span] = own_values[0]
            if reserved:
                layer.hold(batch_keys, batch_values, span)
            else:
                layer.update(batch_keys, batch_values)
        return enc, cache

    def _generate_batch(
        self,
        enc: dict[str, torch.Tensor],
        rows: Sequence[int],
        max_new_tokens: int,
        prune: bool,
        cache: Any = None,
        row_weights: RowWeights | None = None,
    ) -> Any:
        """The new tokens of each row of one padded batch, its rows numbered ``rows``, continuing from
        ``cache`` (the keys and values of its first columns) when given."""
        import torch

        if prune:
            return self._pruned(enc, max_new_tokens, self._stop_ids(), rows=rows, cache=cache, row_weights=row_weights)
        config = self._generation_config(max_new_tokens)
        with torch.no_grad(), rows_present(row_weights, rows):
            generated = cast(Any, self.model).generate(
                **enc, cache=cache, generation_config=config, tokenizer=self.tokenizer
            )
        return generated[:, enc["input_ids"].shape[1] :]

    def cache_token_budget(self) -> int | None:
        """Most tokens, over all rows, whose KV cache fits a quarter of the machine's memory on the CPU
        (None: no limit on an accelerator, or when the config does not say the cache's size)."""
        per_token = kv_cache_bytes_per_token(self.config, self.model.dtype.itemsize)
        memory = physical_memory()
        if per_token is None or memory is None or self.device.type != "cpu":
            return None
        return memory // 4 // per_token

    def rows_that_fit(self, length: int) -> int:
        """Most rows of ``length`` tokens whose KV cache fits :meth:`cache_token_budget` (at least one)."""
        budget = self.cache_token_budget()
        return 1 << 30 if budget is None else max(1, budget // length)

    def _stop_ids(self) -> set[int]:
        eos = self._generation_config(1).eos_token_id
        return set() if eos is None else set(eos if isinstance(eos, list) else [eos])

    def _pruned(
        self,
        enc: dict[str, torch.Tensor],
        max_new_tokens: int,
        stops: set[int],
        *,
        rows: Sequence[int] | None = None,
        cache: Any = None,
        row_weights: RowWeights | None = None,
    ) -> list[list[int]]:
        """The new tokens of each row of a padded batch (each up to and with its end token), continuing
        from ``cache`` when given; the rows are numbered ``rows`` (default: from 0) for
        ``row_weights``."""
        import torch

        input_ids, mask = enc["input_ids"], enc["attention_mask"]
        if cache is None and self._branchable(input_ids.shape[1] + max_new_tokens):
            from pytest_safeedit.backends.reserved import reserved_cache

            cache = reserved_cache(self.model.config, min(max_new_tokens, ROOM_TOKENS))
        numbers = list(range(input_ids.shape[0])) if rows is None else list(rows)
        active = list(range(input_ids.shape[0]))
        tokens: list[list[int]] = [[] for _ in active]
        produced = 0
        while active and produced < max_new_tokens:
            config = self._generation_config(min(PRUNE_EVERY, max_new_tokens - produced))
            config.return_dict_in_generate = True
            with torch.no_grad(), rows_present(row_weights, [numbers[row] for row in active]):
                generated = cast(Any, self.model).generate(
                    input_ids=input_ids, attention_mask=mask, cache=cache, generation_config=config
                )
            sequences = generated.sequences
            new = sequences[:, input_ids.shape[1] :]
            produced += new.shape[1]
            keep = []
            for row, row_tokens in enumerate(new.tolist()):
                ended = next((i for i, t in enumerate(row_tokens) if t in stops), None)
                tokens[active[row]].extend(row_tokens if ended is None else row_tokens[: ended + 1])
                if ended is None:
                    keep.append(row)
            if not keep or produced >= max_new_tokens:
                break
            cache = generated.cache if hasattr(generated, "cache") else generated.past_key_values
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], new.shape[1]))], dim=1)
            if len(keep) < len(active):
                index = torch.tensor(keep, device=sequences.device)
                sequences, mask = sequences[index], mask[index]
                if cache is not None:
                    cache.reorder_cache(index)
                active = [active[row] for row in keep]
            input_ids = sequences
        return tokens


def reads_enough(found: Beneath, length: int, start: int) -> bool:
    """Whether a prefix of ``length`` tokens whose first ``start`` are computed already is worth reading
    from ``found``: it holds at least ``MIN_SHARED_TOKENS`` more of them (or all the rest)."""
    return min(found.length, length) - start >= min(MIN_SHARED_TOKENS, length - start)


def layer_states(cache: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The keys and values of each layer of a dynamic cache."""
    for layer in cache.layers:
        yield layer.keys, layer.values


def stretch_sensitive(generation_config: Any) -> list[str]:
    """The fields that a model's generation config sets and that pruned generation would not honour, sorted
    (none: pruning gives what one ``generate`` call gives).

    Each stretch is a ``generate`` call of its own, so whatever counts from the start of a call restarts
    with it: the minimum of new tokens, the end token forced at the last step, the tokens suppressed at the
    beginning, the length penalty's start, the time limit, the prompt that the encoder penalties and
    guidance read; stop strings end rows that pruning does not see end, and a static cache cannot be
    continued. Fields not known to be safe (:data:`STRETCH_SAFE_FIELDS`) count as sensitive."""
    from transformers import GenerationConfig

    defaults: dict[str, Any] = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    out = []
    for field in vars(GenerationConfig()):
        value = getattr(generation_config, field, None)
        if field.startswith("_") or field in STRETCH_SAFE_FIELDS or value is None or value == defaults.get(field):
            continue
        if field == "cache_implementation" and value == "hybrid":
            continue  # generate drops it for the dynamic cache (the default)
        out.append(field)
    return sorted(out)


def kv_cache_bytes_per_token(config: Any, itemsize: int) -> int | None:
    """Bytes of keys and values one token takes in the KV cache, from the model config (None: unknown)."""
    from pytest_safeedit.backends.architecture import config_int

    layers = config_int(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = config_int(config, "num_attention_heads", "n_head")
    kv_heads = config_int(config, "num_key_value_heads", "multi_query_group_num") or heads
    head_dim = config_int(config, "head_dim")
    if head_dim is None:
        width = config_int(config, "hidden_size", "n_embd", "d_model")
        head_dim = width // heads if width is not None and heads else None
    if layers is None or kv_heads is None or head_dim is None:
        return None
    return 2 * layers * kv_heads * head_dim * itemsize


def physical_memory() -> int | None:
    """The machine's memory in bytes (None where the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' progress bars while loading, so that test output stays readable."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def gguf_parts(name_or_path: str) -> tuple[str, str | None]:
    """A ``.gguf`` file as (its folder, its file name) for ``from_pretrained(folder, gguf_file=name)``;
    anything else as (itself, None)."""
    path = Path(name_or_path)
    if is_gguf(name_or_path) and path.is_file():
        return str(path.resolve().parent), path.name
    return name_or_path, None


def _gguf_folder(settings: ModelSettings, root: Path, mode: str, file_hashes: Path | None) -> str | None:
    """The converted folder of the run's GGUF file, or None to parse the file (not wanted, or the cache
    folder cannot be written: said in a warning)."""
    import warnings

    from pytest_safeedit.backends.gguf_cache import converted_folder, wanted

    path = Path(settings.name_or_path)
    if not wanted(path, mode):
        return None
    try:
        with gguf_errors(settings.name_or_path), quiet_transformers():
            return str(converted_folder(path, settings.dtype, root, file_hashes))
    except OSError as exc:
        warnings.warn(
            f"{path}: could not keep its converted copy in {root / 'gguf'} ({exc}); the file is parsed on every "
            "run. Free the disk or give --safeedit-cache-dir, or pass --safeedit-gguf-cache off",
            stacklevel=2,
        )
        return None


@contextmanager
def gguf_errors(name_or_path: str) -> Iterator[None]:
    """Say which GGUF file transformers could not read, and what to do, instead of its bare message."""
    if gguf_parts(name_or_path)[1] is None:
        yield
        return
    try:
        yield
    except ImportError as exc:
        raise ImportError(
            f"{name_or_path}: loading a GGUF file needs the 'gguf' package: pip install 'pytest-safeedit[gguf]' ({exc})"
        ) from exc
    except (ValueError, NotImplementedError, KeyError) as exc:
        raise ValueError(
            f"{name_or_path}: transformers cannot load this GGUF file ({type(exc).__name__}: {exc}); its "
            "architecture or quantization is not supported by transformers' GGUF loader: convert the model "
            "to a Hugging Face folder (config.json and safetensors), or upgrade transformers"
        ) from exc


def load_model(
    settings: ModelSettings,
    *,
    lazy: bool = False,
    gguf_cache: Path | None = None,
    gguf_mode: str = "auto",
    file_hashes: Path | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer with the Auto classes (a local path or a hub id), with the
    resolved dtype and device of ``settings`` (see :func:`pytest_safeedit.config.settings.resolve_model_settings`).

    With ``lazy``, only the tokenizer and config load now and the weights on first use. With
    ``gguf_cache`` (a cache folder), a GGUF file that ``gguf_mode`` converts is read from its converted
    folder there, converted first if needed (:mod:`pytest_safeedit.backends.gguf_cache`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(settings.seed)
    device = settings.device
    source, gguf = gguf_parts(settings.name_or_path)
    if gguf is not None and gguf_cache is not None:
        folder = _gguf_folder(settings, gguf_cache, gguf_mode, file_hashes)
        if folder is not None:
            source, gguf = folder, None
    common: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
    if gguf is not None:
        common["gguf_file"] = gguf  # dequantized on load, to the dtype below
    kwargs: dict[str, Any] = {"dtype": getattr(torch, settings.dtype), **common}
    if settings.device_map:
        kwargs["device_map"] = settings.device_map
    with gguf_errors(settings.name_or_path), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        config = AutoConfig.from_pretrained(source, **common)

    def load_weights() -> Any:
        torch.manual_seed(settings.seed)
        with gguf_errors(settings.name_or_path), quiet_transformers():
            model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if not settings.device_map:
            model.to(device)
        model.eval()
        return model

    return LoadedModel(load_weights if lazy else load_weights(), tokenizer, settings, config)


class HFGenerator:
    """The :class:`~pytest_safeedit.backends.base.Generator` over a Hugging Face model in this process.

    The tokenizer loads on the first generation and the weights on the first forward pass, so that a run
    whose responses all come from the cache loads neither.
    """

    backend = "hf"

    def __init__(
        self,
        settings: ModelSettings,
        *,
        file_hashes: Path | None = None,
        gguf_cache: Path | None = None,
        gguf_mode: str = "auto",
    ) -> None:
        self.settings = settings
        self._file_hashes = file_hashes
        self._gguf = (gguf_cache, gguf_mode)
        self._model: LoadedModel | None = None
        self._identity: str | None = None

    @property
    def model(self) -> LoadedModel:
        """The loaded model (tokenizer now, weights on first use)."""
        if self._model is None:
            root, mode = self._gguf
            self._model = load_model(
                self.settings, lazy=True, gguf_cache=root, gguf_mode=mode, file_hashes=self._file_hashes
            )
        return self._model

    def identity(self) -> str:
        from pytest_safeedit.util.cache import digest, model_identity

        if self._identity is None:
            content = model_identity(
                self.settings.name_or_path, lambda: (self.model.model, self.model.tokenizer), self._file_hashes
            )
            # The content names the model, not its folder: a copy elsewhere is the same model.
            load = {
                k: v
                for k, v in self.settings.to_dict().items()
                if k not in ("name_or_path", "max_input_tokens", "seed")
            }
            self._identity = digest(self.backend, content, load)
        return self._identity

    #: Several cases' edited weights can answer in one batch, one per row (``generate(..., row_weights=)``).
    answers_row_weights = True

    def generate(self, requests: Sequence[Request], row_weights: RowWeights | None = None) -> list[str]:
        """Responses to ``requests``, in order; ``row_weights``: the weights each request runs with (from
        :func:`~pytest_safeedit.backends.rows.row_weights`, numbered as ``requests``)."""
        if not requests:
            return []
        settings = requests[0].settings
        model = self.model.with_input_limit(settings.max_input_tokens)
        if settings.sampled:
            return self._sample(model, requests)
        prompts = [model.format_prompt(r.text, r.system, max_new_tokens=settings.max_new_tokens) for r in requests]
        return model.generate(
            prompts,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            batch_tokens=settings.batch_tokens,
            prefix_cache_mb=settings.prefix_cache_mb,
            row_weights=row_weights,
        )

    @staticmethod
    def _sample(model: LoadedModel, requests: Sequence[Request]) -> list[str]:
        """All samples of a probe come from one seeded call; a request takes the one its index names."""
        settings = requests[0].settings
        drawn: dict[tuple[str, str | None], list[str]] = {}
        for r in requests:
            if (r.text, r.system) not in drawn:
                drawn[(r.text, r.system)] = model.sample(
                    model.format_prompt(r.text, r.system, max_new_tokens=settings.max_new_tokens),
                    max_new_tokens=settings.max_new_tokens,
                    count=settings.samples,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    seed=sample_seed(settings.seed, r.text, r.system),
                )
        return [drawn[(r.text, r.system)][r.sample] for r in requests]

    def editable(self, settings: GenerationSettings) -> LoadedModel:
        return self.model.with_input_limit(settings.max_input_tokens)

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, **self.settings.to_dict()}
        gguf = gguf_parts(self.settings.name_or_path)[1]
        if gguf is not None:
            out.update(gguf_file=gguf, dequantized_to=self.settings.dtype)
        if self._model is not None:
            architectures = getattr(self._model.config, "architectures", None) or [None]
            out.update(model_class=architectures[0], chat_template=self._model.use_chat_template)
            if self._model.loaded:
                m = self._model.model
                out.update(
                    model_class=type(m).__name__,
                    parameters=sum(p.numel() for p in m.parameters()),
                    dtype=str(next(m.parameters()).dtype).removeprefix("torch."),
                    device=str(self._model.device),
                )
        return out
