"""Choosing tokens from logits, and the single-row decode the app streams: the torch half of the shared loop.

Split from base.py (the Row rules, torch-free) so that building a `Sampling` or tokenising a training target does
not import torch; every in-process backend imports this module.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from edgedistill.device import host, on_host
from edgedistill.generation.base import Row
from edgedistill.generation.protocols import Backend, SingleRowDecoder
from edgedistill.generation.sampling import Sampling, Token


def choose_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> list[int]:
    """Next token per row: argmax, or a draw at `temperature` from the smallest set holding `top_p` of the mass.
    On the host, with the row's CPU random stream: a seeded sample does not depend on the device."""
    logits = host(logits)
    if sampling.temperature <= 0:
        return logits.argmax(-1).tolist()
    with on_host():       # the decoding loop may run in a GPU's device context
        uniform = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64)
        return draw_tokens(logits, sampling, uniform)


def draw_tokens(logits: torch.Tensor, sampling: Sampling, uniform: torch.Tensor) -> list[int]:
    """The sampled token of each row for its uniform draw in [0, 1) ([rows, 1], float64)."""
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        sorted_probs[(sorted_probs.cumsum(-1) - sorted_probs) > sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # Inverse-CDF draw: one uniform per row against the cumulative distribution (float64, so the tail of a
    # 50k-token vocabulary keeps its mass). torch.multinomial draws an exponential per vocabulary entry instead,
    # 84 ms per step for 64 rows here, a sixth of a sampling run.
    cdf = probs.double().cumsum(-1)
    return torch.searchsorted(cdf, uniform * cdf[:, -1:]).clamp(max=probs.shape[-1] - 1).squeeze(-1).tolist()


def token_probability(logits: torch.Tensor, token: int) -> float:
    """The model's probability of `token` at temperature 1, from one row's logits ([vocab])."""
    return float(torch.softmax(logits.float(), -1)[token])


def stream_row(first_logits: torch.Tensor, feed: Callable[[int], torch.Tensor], row: Row, sampling: Sampling,
               generator: torch.Generator | None = None) -> Iterator[Token]:
    """Decode one completion token by token: `first_logits` ([1, vocab]) are the prompt's, `feed(token)` runs one
    token through the model and returns the next logits. The same Row rules as the batched loops."""
    logits = first_logits
    while True:
        forced = bool(row.queue)
        before = len(row.tokens)
        token = row.step(choose_tokens(logits, sampling, generator)[0])
        if len(row.tokens) > before:
            chosen = row.tokens[-1]
            probability = None if forced else token_probability(logits[0], chosen)
            yield Token(row.text, probability)
        if token is None:
            return
        logits = feed(token)


def stream_completion(generator: Backend | SingleRowDecoder, messages: list[dict],
                      sampling: Sampling) -> Iterator[Token]:
    """One completion of a conversation, streamed, on any backend with a single-row decode (transformers,
    llama.cpp, ONNX); a backend without one (a server, vLLM) yields its whole completion at once."""
    if not isinstance(generator, SingleRowDecoder):
        text = generator.generate([messages], sampling, batch_size=1)[0]
        yield Token(text, None)
        return
    ids = generator.prompt_ids(messages)
    first_logits, feed = generator.single_row(ids, sampling.max_new_tokens)
    row = Row(sampling, generator.decode, generator.encode, generator.eos)
    yield from stream_row(first_logits, feed, row, sampling, torch.Generator().manual_seed(sampling.seed))
