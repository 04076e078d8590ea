"""What a backend is, written down: the methods callers rely on, as `typing.Protocol`s (structural: a backend
satisfies one by having its members, it does not inherit from it).

    Backend           every generator `load_generator` returns: batched completion of conversations
    SingleRowDecoder  the in-process backends (transformers, llama.cpp, ONNX): one row decoded token by token by
                      our own loop, which the app streams from and the export stage's speed probe times
    PromptCompleter   one completion of a prompt already rendered (llama.cpp, ONNX, a server)
    Scorer            teacher-forced log-probabilities of a token sequence (the export stage's parity scorers)

All are runtime-checkable (isinstance looks for the members, not their signatures): `stream_completion` streams
a backend that is a SingleRowDecoder and takes one that is not (a server, vLLM) in one piece; the tests check that
every backend is what this module says it is.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:   # annotations only: importing this module must not import torch or numpy
    import numpy as np
    import torch

    from edgedistill.generation.sampling import Sampling


@runtime_checkable
class Backend(Protocol):
    backend: str             # its name in records and reports ("transformers", "llama.cpp", "onnx", ...)
    generated_tokens: int    # completion tokens written so far, for throughput reports (tokens/s)

    def render(self, messages: list[dict]) -> str:
        """The prompt text of a conversation, with the model's chat template."""

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = ...,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order, stripped; `progress`: a progress bar's label."""


@runtime_checkable
class SingleRowDecoder(Protocol):
    eos: set                 # token ids that end a completion

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The rendered conversation's token ids."""

    def encode(self, text: str) -> list[int]:
        """Text -> token ids, no special tokens added (what the calculator's fills are fed as)."""

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text, special tokens dropped."""

    def single_row(self, ids: list[int], max_new_tokens: int) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
        """(the prompt's next-token logits [1, vocab], feed(token) -> the next logits), on a KV cache of its own."""


@runtime_checkable
class PromptCompleter(Protocol):
    def complete(self, prompt: str, sampling: Sampling) -> str:
        """One completion of an already rendered prompt, seeded by `sampling.seed`, stripped."""


@runtime_checkable
class Scorer(Protocol):
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The rendered conversation's token ids, as the model's own template and tokenizer make them."""

    def logprobs(self, ids: list[int]) -> np.ndarray:
        """Next-token log-probabilities at every position of `ids` in one pass: [len(ids), vocab]."""
