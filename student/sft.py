"""SFT recipe: answer-first (post-thinking, arXiv 2404.09170) on the teacher's calculator targets.

    data       teacher/sft/train.jsonl (answer-first) or rationale_first.jsonl (the baseline), tokenised with the
               calculator split; loss on completion tokens only, EOS appended so the student learns to stop
    batches    shuffled, similar lengths together (little padding), a function of (seed, epoch): a resumed run
               sees the batches the killed run would have
    loss       answer_first_loss: answer tokens + lambda_r x rationale tokens, optionally hardness-weighted;
               with the defaults (lambda_r = 1, no hardness) the token-mean NLL of the whole completion
    loop       student/loop.py (LoRA or full, checkpoints, resume, logging, dev evaluation)

With LoRA on the top layers only, the frozen bottom's hidden states are computed in epoch 1 and reused after
(`FrozenBottom`): a third of the forward pass saved from epoch 2 on, exactly.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.records import read_jsonl
from edgedistill.student.batching import FrozenBottom, answer_mask, batches_for_epoch, check_trainable, collate, token_logps, \
    tokenise
from edgedistill.student.loop import finish_stage, load_student, shard, train_loop
from edgedistill.student.objectives import answer_first_loss


def run_sft(config: Config, sft_file: Path, out: Path, model: str | None = None, merged: Path | None = None,
            evaluate_factory=None) -> dict:
    """Fine-tune `model` (default student.model) on `sft_file`; the merged model goes to `merged` (out/merged)."""
    cfg = config.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = [row for _, row in read_jsonl(sft_file)]
    if not rows:
        raise UserError(f"{sft_file}: no training examples (the teacher verified none); nothing to train on")
    torch.manual_seed(config.seed)
    student = load_student(cfg, model or cfg.model, config.allow_network)
    examples = tokenise(student.tokenizer, rows, cfg.max_length)
    empty = check_trainable(examples, cfg.max_length, sft_file)
    lengths = [len(e["input_ids"]) for e in examples]
    frozen = FrozenBottom(student.backbone.get_decoder(), student.first_trainable_layer) \
        if student.first_trainable_layer > 0 and cfg.epochs > 1 else None
    rank, world = shard()                     # with N processes a step's batch is N x batch_size, each its slice
    global_size = cfg.batch_size * world
    batches_per_epoch = math.ceil(len(examples) / global_size)
    total_steps = max(1, math.ceil(batches_per_epoch * cfg.epochs / cfg.accumulation))
    print(f"student sft: {len(examples)} examples, {total_steps} steps of {cfg.batch_size} x {cfg.accumulation} "
          f"({cfg.method}{f' r={cfg.lora_r}' if cfg.method == 'lora' else ''}, {cfg.format}), "
          f"{sum(p.numel() for p in student.params) / 1e6:.2f}M trainable parameters", flush=True)

    def micro_loss(step: int, micro: int):
        # micro-batches run through the epochs in order (a step may span two), so none repeats within an epoch
        epoch, position = divmod(step * cfg.accumulation + micro, batches_per_epoch)
        everyone = [examples[i] for i in batches_for_epoch(lengths, global_size, config.seed, epoch)[position]]
        batch = collate(everyone[rank::world], student.tokenizer.pad_token_id)
        if world == 1:
            return batch_loss(student, batch, cfg, frozen)
        loss, metrics = batch_loss(student, batch, cfg, frozen, denominator=loss_denominator(everyone, cfg))
        return loss * world, metrics          # DDP averages gradients over the processes

    evaluate = evaluate_factory(student) if evaluate_factory else None
    result = train_loop(student, out, cfg, total_steps, micro_loss, evaluate, name="sft")
    merged = merged or out / "merged"
    finish_stage(student, out, merged)
    return {**result, "examples": len(examples), "examples_without_tokens": empty,
            "final_loss": result["final"].get("loss"), "merged": str(merged)}


def batch_loss(student, batch: dict, cfg, frozen: FrozenBottom | None = None, denominator: float | None = None
               ) -> tuple[torch.Tensor, dict]:
    """The answer-first loss of one collated batch, and its completion token count."""
    logps, mask = token_logps(student.backbone, batch, frozen)
    answer = answer_mask(mask, batch["answer_tokens"])
    loss = answer_first_loss(logps, answer, mask - answer, cfg.rationale_weight, cfg.hardness,
                             weight=batch["weight"], denominator=denominator)
    return loss, {"tokens": float(mask.sum())}


def loss_denominator(examples: list[dict], cfg) -> float:
    """The weighted completion-token count of a whole (global) batch: answer tokens + lambda_r x the rest."""
    total = 0.0
    for e in examples:
        completion = sum(label != -100 for label in e["labels"][1:])
        answer = min(e["answer_tokens"], completion)
        total += answer + cfg.rationale_weight * (completion - answer)
    return max(total, 1e-8)
