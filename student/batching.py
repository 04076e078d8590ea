"""Batches for every student recipe: tokenised prompt + completion, right-padded batches of similar length, and
per-token log-probabilities at completion positions only.

The LM head (vocabulary x width) is the costliest matrix of a small model, so logits are computed only where a
label is (completion tokens); `token_logps` returns them as [batch, completion length] with a mask, the shape
every objective in student/objectives.py takes.
"""
from __future__ import annotations

import random
import sys

import torch
import torch.nn.functional as F

from edgedistill import UserError
from edgedistill.device import host
from edgedistill.generation import encode_completion, render_prompt


def tokenise(tokenizer, rows: list[dict], max_length: int, completion_key: str = "completion") -> list[dict]:
    """input_ids and labels per example; labels are -100 on the prompt so only the completion is learned, and EOS
    ends the completion so the student learns to stop. `answer_tokens`: how many completion tokens the answer
    line of an answer-first completion takes (its first line; the whole completion otherwise)."""
    examples = []
    for row in rows:
        prompt_ids = tokenizer.encode(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)
        completion = row[completion_key][-1]["content"]
        completion_ids, answer_tokens = encode_answer_first(tokenizer, completion)
        completion_ids.append(tokenizer.eos_token_id)
        ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + completion_ids)[:max_length]
        examples.append({"input_ids": ids, "labels": labels, "weight": float(row.get("weight", 1.0)),
                         "answer_tokens": answer_tokens, "index": len(examples), "prompt_tokens": len(prompt_ids)})
    return examples


def trainable_tokens(example: dict) -> int:
    """The completion tokens the loss sees: labels from position 1 on (nothing predicts position 0)."""
    return sum(label != -100 for label in example["labels"][1:])


def check_trainable(examples: list[dict], max_length: int, source, what: str = "examples",
                    setting: str = "student.max_length") -> int:
    """How many examples have no completion token left within `max_length` (their prompt fills it); a UserError
    when none has one, before any step: training would log loss 0 at every step and merge a copy of the base
    model. Some without: a warning with the count (they cost a batch slot and teach nothing)."""
    empty = [e for e in examples if trainable_tokens(e) == 0]
    if not examples or len(empty) < len(examples):
        if empty:
            print(f"warning: {source}: {len(empty)} of {len(examples)} {what} have prompts of {max_length} tokens "
                  f"or more and train on nothing ({setting}={max_length}); raise {setting} or shorten those "
                  f"prompts", file=sys.stderr, flush=True)
        return len(empty)
    prompts = sorted(e.get("prompt_tokens", len(e["labels"])) for e in examples)
    raise UserError(f"{source}: all {len(examples)} {what} are too long for {setting}={max_length}: their prompts "
                    f"take {prompts[0]} to {prompts[-1]} tokens and leave no completion token to train on; raise "
                    f"{setting} or shorten the prompts")


def encode_answer_first(tokenizer, completion: str) -> tuple[list[int], int]:
    """(token ids, answer tokens): the answer line and the rest encoded apart (the same ids as encoding the whole,
    checked on the 400 quickstart targets: a newline ends a pre-token), so the answer's share is exact."""
    cut = completion.find("\n") + 1
    if not completion.startswith("Answer:") or cut == 0:
        ids = encode_completion(tokenizer, completion)
        return ids, len(ids)
    answer = encode_completion(tokenizer, completion[:cut])
    return answer + encode_completion(tokenizer, completion[cut:]), len(answer)


def collate(examples: list[dict], pad_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    def pad(seq, value):
        return seq + [value] * (width - len(seq))
    return {"input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in examples]),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples]),
            "labels": torch.tensor([pad(e["labels"], -100) for e in examples]),
            "weight": torch.tensor([e["weight"] for e in examples]),
            "answer_tokens": torch.tensor([e["answer_tokens"] for e in examples]),
            "index": [e["index"] for e in examples]}


class FrozenBottom:
    """The hidden states after the frozen bottom layers, kept per example and reused in every later epoch.

    With LoRA on the top layers only, the bottom layers (and the embeddings) never change, so an example's hidden
    state after them is the same every epoch: the second epoch skips a third of the forward pass (about 30 s of
    the quickstart). Exact because batches are right-padded and attention is causal: a real token never sees a
    pad, so its state does not depend on which examples share its batch. About 0.5 MB per example at 576 wide.
    """

    def __init__(self, decoder, n_frozen: int):
        self.decoder, self.n_frozen = decoder, n_frozen
        self.states: dict[int, torch.Tensor] = {}

    def hidden(self, batch: dict) -> torch.Tensor:
        ids, lengths = batch["index"], batch["attention_mask"].sum(-1).tolist()
        if not all(i in self.states for i in ids):
            captured = {}
            hook = self.decoder.layers[self.n_frozen - 1].register_forward_hook(
                lambda module, args, output: captured.setdefault("h", _tensor(output).detach()))
            try:
                hidden = _decoder_hidden(self.decoder, batch, input_ids=batch["input_ids"])
            finally:
                hook.remove()
            for i, length, h in zip(ids, lengths, captured["h"]):
                self.states[i] = host(h[:length]).clone()     # kept in the CPU's memory, not the GPU's
            return hidden
        width = batch["input_ids"].shape[1]
        embeds = torch.zeros(len(ids), width, self.states[ids[0]].shape[-1], dtype=self.states[ids[0]].dtype)
        for row, i in enumerate(ids):
            embeds[row, :len(self.states[i])] = self.states[i]     # torch copies across devices on assignment
        all_layers = self.decoder.layers
        self.decoder.layers = all_layers[self.n_frozen:]   # the decoder runs whatever `layers` holds, in order
        try:
            return _decoder_hidden(self.decoder, batch, inputs_embeds=embeds)
        finally:
            self.decoder.layers = all_layers


def _tensor(output):
    return output[0] if isinstance(output, tuple) else output


def _decoder_hidden(decoder, batch: dict, **inputs) -> torch.Tensor:
    return decoder(attention_mask=batch["attention_mask"], use_cache=False, **inputs).last_hidden_state


def completion_logits(backbone, batch: dict, frozen: FrozenBottom | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at completion positions only, with their targets and the example each belongs to.

    The LM head (vocabulary x width) is the costliest matrix of a small model; running it on the prompt
    positions, whose labels are masked anyway, would spend about half of a CPU step for nothing.
    """
    hidden = frozen.hidden(batch) if frozen else _decoder_hidden(backbone.get_decoder(), batch,
                                                                 input_ids=batch["input_ids"])
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    rows = torch.arange(targets.shape[0])[:, None].expand_as(targets)[mask]
    logits = backbone.get_output_embeddings()(hidden[:, :-1][mask])
    return logits, targets[mask], rows


def batches_for_epoch(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (less padding): shuffle, sort within windows of 8 batches, shuffle
    the batches. A function of (seed, epoch) only, so a resumed run sees the same batches."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 8
    order = [i for w in range(0, len(order), window) for i in sorted(order[w:w + window], key=lengths.__getitem__)]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def token_logps(backbone, batch: dict, frozen: FrozenBottom | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(token) [batch, T], mask [batch, T]) at completion positions, left-aligned: column t is the t-th
    completion token of each row. Log-softmax in fp32 whatever the autocast dtype."""
    logits, targets, rows = completion_logits(backbone, batch, frozen)
    logps = -F.cross_entropy(logits.float(), targets, reduction="none")
    return pad_by_row(logps, rows, batch["input_ids"].shape[0])


def pad_by_row(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token values, each tagged with its row (rows sorted, as boolean masking gives them) -> [n_rows, T]
    with zeros after each row's end, and the 0/1 mask."""
    counts = torch.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if len(rows) else 0
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(len(rows)) - starts[rows]
    padded = values.new_zeros(n_rows, width).index_put((rows, column), values)
    mask = torch.zeros(n_rows, width, dtype=values.dtype).index_put((rows, column), torch.ones_like(values))
    return padded, mask


def answer_mask(mask: torch.Tensor, answer_tokens: torch.Tensor) -> torch.Tensor:
    """The completion positions of the answer line (the first `answer_tokens` of each row)."""
    return mask * (torch.arange(mask.shape[1])[None, :] < answer_tokens[:, None])
