"""transformers backend: batched generation with the calculator, on any causal LM transformers loads.

The decoding loop is ours, with the per-row rules every in-process backend shares (`Row`, base.py), and:
- finished rows leave the batch at once (their KV rows are dropped), so a batch does not run at the pace of its
  longest row, which `transformers.generate` does.
- the token prefix every prompt shares is run through the model once, and rows with the same prompt are prefilled
  once (see `generate` and `_generate_batch`).
"""
from __future__ import annotations

import copy

import torch
from tqdm import tqdm
from transformers import DynamicCache

from edgedistill.device import model_scope
from edgedistill.generation.base import MIN_SHARED_PREFIX, Row, shared_prefix
from edgedistill.generation.decoding import choose_tokens
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import render_prompt


class TransformersGenerator:
    """Batched generation with the calculator for a loaded (model, tokenizer)."""

    backend = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = getattr(model.generation_config, "eos_token_id", None)
        self.eos = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.generated_tokens = 0   # completion tokens so far, for progress reports (tokens/s)

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 16,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order.

        Rows are sorted by length so batches pad little. The token prefix every prompt shares (system turn, worked
        examples) is run through the model once; each batch starts from a copy of its KV cache, so a few-shot
        prompt costs only its question.
        """
        with model_scope(self.model):       # token ids, masks and positions made beside the model
            return self._generate(conversations, sampling, batch_size, progress)

    def _generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int,
                  progress: str | None) -> list[str]:
        prompts = [self.prompt_ids(m) for m in conversations]
        prefix = shared_prefix(prompts)
        prefix_cache = self._prefill(prefix) if len(prefix) >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            prefix = []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        generator = torch.Generator().manual_seed(sampling.seed)
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            suffixes = [prompts[i][len(prefix):] for i in rows]
            for row, text in zip(rows, self._generate_batch(prefix, prefix_cache, suffixes, sampling, generator)):
                outputs[row] = text
            bar.update(len(rows))
        bar.close()
        return outputs

    def render(self, messages: list[dict]) -> str:
        return render_prompt(self.tokenizer, messages)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.encode(self.render(messages), add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def single_row(self, ids: list[int], max_new_tokens: int = 0):
        """(the prompt's next-token logits [1, vocab], feed(token) -> the next logits), on a KV cache of its own."""
        cache = DynamicCache()

        def run(input_ids: list[int]) -> torch.Tensor:
            with torch.inference_mode(), model_scope(self.model):
                return self.model(input_ids=torch.tensor([input_ids]), past_key_values=cache, use_cache=True,
                                  logits_to_keep=1).logits[:, -1]
        return run(ids), lambda token: run([token])

    def _prefill(self, prefix: list[int]):
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return cache

    def _generate_batch(self, prefix: list[int], prefix_cache, suffixes: list[list[int]], sampling: Sampling,
                        generator: torch.Generator | None = None) -> list[str]:
        """[shared prefix][padding][suffix] per row; the padding is masked, so positions continue after the prefix.

        Rows with the same prompt (a teacher's k samples of one question) are prefilled once and their KV rows
        copied: with k = 4 the prompt costs a quarter.
        """
        pad = self.tokenizer.pad_token_id
        unique: dict[tuple, int] = {}
        row_of = [unique.setdefault(tuple(s), len(unique)) for s in suffixes]
        distinct = [list(s) for s in unique]
        width = max(len(s) for s in distinct)
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in distinct])
        mask = torch.tensor([[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in distinct])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(distinct))
        else:
            cache = DynamicCache()
        rows = [Row(sampling, self.decode, self.encode, self.eos) for _ in suffixes]
        active = list(range(len(rows)))            # rows still decoding, in the cache's batch order
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions[:, -width:],
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position = positions[:, -1] + 1
        if len(distinct) < len(suffixes):          # copy each prompt's KV rows to every row that asked for it
            index = torch.tensor(row_of)
            cache.batch_select_indices(index)
            logits, mask, next_position = logits[index], mask[index], next_position[index]
        while True:
            chosen = choose_tokens(logits, sampling, generator)
            fed = [rows[r].step(token) for r, token in zip(active, chosen)]
            keep = [i for i, token in enumerate(fed) if token is not None]
            if not keep:
                break
            if len(keep) < len(active):           # drop finished rows from the batch and the cache
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, next_position = mask[index], next_position[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, torch.ones(len(keep), 1, dtype=mask.dtype)], dim=1)
            logits = self.model(input_ids=torch.tensor([[fed[i]] for i in keep]), attention_mask=mask,
                                position_ids=next_position[:, None], past_key_values=cache,
                                use_cache=True).logits[:, -1]
            next_position = next_position + 1
        self.generated_tokens += sum(len(row.tokens) for row in rows)
        return [row.text.strip() for row in rows]
