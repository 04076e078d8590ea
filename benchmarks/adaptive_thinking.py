"""Adaptive thinking (arXiv 2404.09170, docs/algorithms.md#8-adaptive-thinking): per question, think first or
answer first.

The paper's full text was not recovered; this is the design docs/algorithms.md#8-adaptive-thinking infers from
its abstract:

    prompts     two soft prompts, P_pre (rationale first) and P_post (answer first): `prompt_tokens` trainable
                vectors each, prepended to the input embeddings of a frozen student; each is tuned on its own
                format's targets (teacher/sft/rationale_first.jsonl, teacher/sft/train.jsonl); only the prompt
                receives gradient
    perception  g(q) = sigmoid(w . mean-pooled frozen hidden states of q + b), a linear probe trained with binary
                cross-entropy on which mode answers the question better (the lower answer NLL under each prompt)
    inference   P_pre when g(q) > 0.5, else P_post; greedy decoding with the chosen prompt in front

It is a research recipe, kept here and not shipped in the package: its ceiling was measured on 2026-12-03
(`benchmarks/adaptive_bound.py`, docs/results.md): a perfect per-question choice between the answer-first and
rationale-first students of the quickstart's 1e-3 recipe is right on 66.7% of dev and 69.6% of dev reworded, below
the plain answer-first student at learning rate 2e-3 alone (72.5%, 76.1%), and a chooser of soft prompts on a
frozen student can only fall short of that ceiling. The prompts would live beside the model
(adaptive.safetensors), so the GGUF and ONNX exports, which carry weights only, would not include them either.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from edgedistill import UserError
from edgedistill.generation import render_prompt
from edgedistill.student.batching import check_trainable, collate, tokenise

MODES = ("pre", "post")       # g = 1 -> pre (think first), g = 0 -> post (answer first)


@dataclass
class AdaptiveConfig:
    prompt_tokens: int = 20
    learning_rate: float = 1e-3       # docs/algorithms.md#8-adaptive-thinking: soft prompts, LR 1e-3, 20 tokens
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 320
    probe_steps: int = 200
    seed: int = 0


def freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def init_soft_prompt(model, n_tokens: int, seed: int = 0) -> torch.nn.Parameter:
    """Initialised from the embeddings of random vocabulary tokens (prompt tuning's usual start: the vectors begin
    inside the distribution the model has seen)."""
    table = model.get_input_embeddings().weight
    ids = torch.randint(0, table.shape[0], (n_tokens,), generator=torch.Generator().manual_seed(seed))
    return torch.nn.Parameter(table[ids].detach().clone())


def with_prompt(model, soft_prompt: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """(inputs_embeds, attention_mask) with the soft prompt in front of every row."""
    embeds = model.get_input_embeddings()(input_ids)
    front = soft_prompt[None].expand(len(input_ids), -1, -1).to(embeds.dtype)
    ones = attention_mask.new_ones(len(input_ids), len(soft_prompt))
    return torch.cat([front, embeds], 1), torch.cat([ones, attention_mask], 1)


def token_nll(model, soft_prompt: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token NLL [batch, T-1], 0/1 completion mask) with the prompt prepended."""
    embeds, mask = with_prompt(model, soft_prompt, batch["input_ids"], batch["attention_mask"])
    logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[:, len(soft_prompt):]
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    return nll, (targets != -100).float()


def completion_nll(model, soft_prompt: torch.Tensor, batch: dict) -> torch.Tensor:
    """Per-row mean NLL of the completion tokens."""
    nll, keep = token_nll(model, soft_prompt, batch)
    return (nll * keep).sum(1) / keep.sum(1).clamp(min=1)


def answer_nll(model, tokenizer, soft_prompt: torch.Tensor, row: dict, max_length: int) -> float:
    """Mean NLL of the answer line's tokens of one SFT row, wherever the line is (first when answer-first, last
    when rationale-first; EOS excluded)."""
    from edgedistill.generation import encode_completion
    example = tokenise(tokenizer, [row], max_length)
    nll, keep = token_nll(model, soft_prompt, collate(example, tokenizer.pad_token_id))
    completion = row["completion"][-1]["content"]
    position = keep.cumsum(1)
    if completion.startswith("Answer:"):
        keep = keep * (position <= example[0]["answer_tokens"]).float()
    else:
        last_line = len(encode_completion(tokenizer, completion[completion.rfind("\n") + 1:]))
        total = keep.sum(1, keepdim=True)
        keep = keep * (position > total - 1 - last_line).float() * (position < total).float()
    return float((nll * keep).sum() / keep.sum().clamp(min=1))


def train_soft_prompt(model, tokenizer, rows: list[dict], cfg: AdaptiveConfig, seed: int) -> torch.Tensor:
    """Prompt tuning on one format's SFT rows, the model frozen: only the soft prompt is updated."""
    freeze(model)
    prompt = init_soft_prompt(model, cfg.prompt_tokens, seed)
    optimizer = torch.optim.AdamW([prompt], lr=cfg.learning_rate, weight_decay=0.0)
    examples = tokenise(tokenizer, rows, cfg.max_length)
    if not examples:
        raise UserError("adaptive thinking: no training rows for a soft prompt; nothing to train on")
    check_trainable(examples, cfg.max_length, "adaptive thinking", setting="AdaptiveConfig.max_length")
    order = list(range(len(examples)))
    steps = max(1, round(len(examples) * cfg.epochs / cfg.batch_size))
    rng = random.Random(seed)
    for step in range(steps):
        if step * cfg.batch_size % len(order) < cfg.batch_size:
            rng.shuffle(order)
        start = step * cfg.batch_size % len(order)
        batch = collate([examples[i] for i in order[start:start + cfg.batch_size]], tokenizer.pad_token_id)
        loss = completion_nll(model, prompt, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return prompt.detach()


class Perception(torch.nn.Module):
    """g(q) in [0, 1]: a linear probe on the mean-pooled hidden states of the question, model frozen."""

    def __init__(self, width: int):
        super().__init__()
        self.probe = torch.nn.Linear(width, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.probe(features)).squeeze(-1)


@torch.no_grad()
def question_features(model, tokenizer, prompts: list[list[dict]]) -> torch.Tensor:
    """Mean-pooled last hidden states of each rendered question prompt (no soft prompt: g sees the question)."""
    rows = []
    for messages in prompts:
        ids = torch.tensor([tokenizer.encode(render_prompt(tokenizer, messages), add_special_tokens=False)])
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
        rows.append(hidden[0].float().mean(0))
    return torch.stack(rows)


def train_perception(features: torch.Tensor, labels: torch.Tensor, steps: int = 200, seed: int = 0) -> Perception:
    """Binary cross-entropy on (features, 1 = pre is better); features standardised by the probe's own init."""
    torch.manual_seed(seed)
    perception = Perception(features.shape[1])
    optimizer = torch.optim.AdamW(perception.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.binary_cross_entropy(perception(features), labels.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return perception


@torch.no_grad()
def mode_labels(model, tokenizer, pre_rows: list[dict], post_rows: list[dict], prompts: dict[str, torch.Tensor],
                max_length: int = 320) -> torch.Tensor:
    """1 where P_pre gives the reference answer a lower NLL than P_post (the same question, row i of each file)."""
    return torch.tensor([1.0 if answer_nll(model, tokenizer, prompts["pre"], pre, max_length)
                         < answer_nll(model, tokenizer, prompts["post"], post, max_length) else 0.0
                         for pre, post in zip(pre_rows, post_rows)])


@torch.no_grad()
def generate(model, tokenizer, soft_prompt: torch.Tensor, messages: list[dict], max_new_tokens: int = 64
             ) -> list[int]:
    """Greedy tokens after `messages` with `soft_prompt` in front, KV cache on."""
    ids = torch.tensor([tokenizer.encode(render_prompt(tokenizer, messages), add_special_tokens=False)])
    embeds, mask = with_prompt(model, soft_prompt, ids, torch.ones_like(ids))
    out = model(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
    tokens = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        tokens.append(token)
        if token == tokenizer.eos_token_id:
            break
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
        out = model(input_ids=torch.tensor([[token]]), attention_mask=mask, past_key_values=out.past_key_values,
                    use_cache=True)
    return tokens


def choose(perception: Perception, features: torch.Tensor, force: float | None = None) -> list[str]:
    """The mode per question: pre where g(q) > 0.5. `force` (0 or 1) overrides g, to test or compare modes."""
    g = perception(features) if force is None else torch.full((len(features),), float(force))
    return ["pre" if value > 0.5 else "post" for value in g.tolist()]


def save(path: Path, prompts: dict[str, torch.Tensor], perception: Perception) -> None:
    from safetensors.torch import save_file
    tensors = {f"prompt.{mode}": prompts[mode].contiguous() for mode in MODES}
    tensors.update({f"perception.{k}": v.detach().contiguous() for k, v in perception.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.replace(path)


def load(path: Path) -> tuple[dict[str, torch.Tensor], Perception]:
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    perception = Perception(tensors["perception.probe.weight"].shape[1])
    perception.load_state_dict({k.removeprefix("perception."): v for k, v in tensors.items()
                                if k.startswith("perception.")})
    return {mode: tensors[f"prompt.{mode}"] for mode in MODES}, perception


def run_adaptive(model, tokenizer, pre_rows: list[dict], post_rows: list[dict], out: Path,
                 cfg: AdaptiveConfig = AdaptiveConfig()) -> dict:
    """Tune P_pre and P_post on the two formats of the same questions, label each question by the better mode,
    fit g; write out/adaptive.safetensors. `pre_rows[i]` and `post_rows[i]` are the same question."""
    model.eval()           # no dropout: the prompt's gradient is the model's, deterministic
    prompts = {"pre": train_soft_prompt(model, tokenizer, pre_rows, cfg, cfg.seed),
               "post": train_soft_prompt(model, tokenizer, post_rows, cfg, cfg.seed + 1)}
    labels = mode_labels(model, tokenizer, pre_rows, post_rows, prompts, cfg.max_length)
    features = question_features(model, tokenizer, [row["prompt"] for row in post_rows])
    perception = train_perception(features, labels, cfg.probe_steps, cfg.seed)
    save(out / "adaptive.safetensors", prompts, perception)
    chosen = choose(perception, features)
    return {"questions": len(labels), "pre_better": int(labels.sum()),
            "chosen_pre": chosen.count("pre"), "path": str(out / "adaptive.safetensors")}
