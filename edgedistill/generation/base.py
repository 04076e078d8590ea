"""The per-row rules every in-process decoding loop shares, and the token split training uses. No torch here.

- calculator: when a row's text ends in an open `<<expr=`, the calculator's value and `>>` are queued as that row's
  next tokens and fed one per step instead of the model's choice; the KV cache is kept, so a fill costs one forward
  per forced token and no restart. The plant's tables work the same way: after an open `[[query =>` the rows
  the query returns and `]]` are queued (table_queries.py), when the sampling carries a table tool.
- stop after the answer: a row stops at the end of its `Answer:` line when only the answer is wanted (evaluation,
  confidence samples), so scoring 200 questions costs about 20 tokens each.
Training targets are tokenised with `encode_completion`, which splits at every tool fill, so the model is
trained on exactly the token sequence it produces at inference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

from edgedistill import table_queries
from edgedistill.calculator import ANNOTATION, fill_for
from edgedistill.generation.sampling import ANSWER_LINE_DONE, Sampling


@dataclass
class Row:
    """One completion being decoded. `step(chosen)` takes the model's choice, or instead the calculator's forced
    token, and returns the token to feed next, or None once the row is finished."""
    sampling: Sampling
    decode: Callable[[list[int]], str]
    encode: Callable[[str], list[int]]
    eos: set
    tokens: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)    # calculator tokens still to force
    text: str = ""
    answered: bool = False                            # its Answer: line is written (the rest is reasoning)

    def step(self, chosen: int) -> int | None:
        token = self.queue.pop(0) if self.queue else chosen
        if token in self.eos:
            return None
        self.tokens.append(token)
        self.text = self.decode(self.tokens)
        if not self.queue:
            fill = tool_fill(self.text, self.sampling)
            if fill:
                self.queue = self.encode(fill)
        if len(self.tokens) >= self.sampling.max_new_tokens:
            return None
        if not self.answered and not self.queue and ANSWER_LINE_DONE.search(self.text):
            self.answered = True
        if self.sampling.stop_after_answer and self.answered:
            return None
        return token


def tool_fill(text: str, sampling: Sampling) -> str | None:
    """The calculator's `value>>` after an open `<<expr=`, or the tables' ` result]]` after an open `[[query =>`."""
    fill = fill_for(text) if sampling.calculator else None
    if fill is None and sampling.tables is not None:
        fill = table_queries.fill_for(text, sampling.tables)
    return fill


@dataclass
class LiveRow:
    """A row with what its caller wants told: each token it writes (`on_token(row, probability)`, the model's
    probability of the token at temperature 1, None for a calculator fill) and its end (`on_done(row)`)."""
    row: Row
    on_done: Callable[[Row], None]
    on_token: Callable[[Row, float | None], None] | None = None
    generator: torch.Generator | None = None    # its own random stream (the app's rows), when `choose` uses one
    position: int = 0                           # next KV position of its slot


@dataclass
class Prompt:
    """A prompt's tokens and the rows that continue it: decoded once, copied into every row's slot."""
    ids: list[int]
    rows: list[LiveRow]
    cancelled: bool = False      # its rows are dropped at the next step (a user who left)
    fail: Callable[[Exception], None] = lambda exc: None   # told when the decode it is in fails


MIN_SHARED_PREFIX = 16   # tokens; below this a shared prefill saves less than the cache copies cost


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix common to all prompts, leaving every prompt at least one token of its own."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    length = 0
    first = prompts[0]
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return first[:length]


def encode_completion(tokenizer, completion: str, calculator: bool = True) -> list[int]:
    """Token ids of a completion as the tool runtime produces them: split after each `<<expr=` and after the
    filled `value>>` (and after each `[[query =>` and its ` result]]`), each piece tokenised on its own (the model
    writes up to `=` or `=>`, the runtime writes the rest)."""
    return encode_with_calculator_flags(tokenizer, completion, calculator)[0]


def encode_with_calculator_flags(tokenizer, completion: str, calculator: bool = True) -> tuple[list[int], list[bool]]:
    """(token ids, written by the calculator?) per token: on-policy RL leaves the calculator's tokens out of the
    policy gradient, since the model did not choose them."""
    tool_values = sorted([m.start(2), m.end()] for m in table_queries.QUERY_ANNOTATION.finditer(completion))
    if calculator:
        tool_values = sorted(tool_values + [[m.start(2), m.end()] for m in ANNOTATION.finditer(completion)])
    pieces, cut = [], 0
    for value_start, value_end in tool_values:
        if value_start < cut:     # a match inside another's value (a cell that reads like markup): not a fill
            continue
        pieces += [(completion[cut:value_start], False), (completion[value_start:value_end], True)]
        cut = value_end
    pieces.append((completion[cut:], False))
    ids: list[int] = []
    forced: list[bool] = []
    for piece, by_calculator in pieces:
        if piece:
            piece_ids = tokenizer.encode(piece, add_special_tokens=False)
            ids += piece_ids
            forced += [by_calculator] * len(piece_ids)
    return ids, forced
