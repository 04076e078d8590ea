"""DPO recipe (Rafailov et al., arXiv 2305.18290) on the teacher's preference pairs, InfiAlign-style.

    data       teacher/preferences/train.jsonl: prompt, chosen (verified, best scored), rejected (failed: a weaker
               model's or the student's own wrong sample, length-balanced)
    reference  the starting model's summed log-probabilities of every chosen and rejected completion, computed
               once before the first step and stored (reference_logps.json): a step runs one model, not two, and a
               resumed run keeps the true reference, not the half-trained policy
    loss       dpo_loss (student/objectives.py): log 2 at step 0, by construction
    loop       student/loop.py, with chosen and rejected of a batch in one forward pass; data-parallel under
               `accelerate launch` (equal slices of the pairs: the mean of the processes' means is the batch mean)
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import torch

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.records import read_jsonl, write_json_atomic
from edgedistill.student.batching import check_trainable, collate, token_logps, tokenise
from edgedistill.student.loop import finish_stage, load_student, shard, train_loop
from edgedistill.student.objectives import dpo_loss, sequence_logp


def pair_examples(tokenizer, rows: list[dict], max_length: int) -> list[tuple[dict, dict]]:
    """(chosen, rejected) tokenised examples; chosen i has index 2i, rejected 2i + 1."""
    chosen = tokenise(tokenizer, rows, max_length, completion_key="chosen")
    rejected = tokenise(tokenizer, rows, max_length, completion_key="rejected")
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        c["index"], r["index"] = 2 * i, 2 * i + 1
    return list(zip(chosen, rejected))


def pair_logps(backbone, pairs: list[tuple[dict, dict]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probabilities (chosen [n], rejected [n]) in one forward pass over 2n rows."""
    batch = collate([e for pair in pairs for e in pair], pad_id)
    logps, mask = token_logps(backbone, batch)
    sequences = sequence_logp(logps, mask)
    return sequences[0::2], sequences[1::2]


@torch.no_grad()
def reference_logps(student, pairs, pad_id: int, path: Path, batch_size: int = 8) -> torch.Tensor:
    """[n, 2] reference log-probabilities on the student's device, from `path` when an earlier (killed) run stored
    them; in the training precision (the loop's autocast), so the loss is log 2 at step 0 exactly there too."""
    if path.exists():
        stored = json.loads(path.read_text())
        if len(stored) == len(pairs):
            return student.placement.put(torch.tensor(stored))
    student.model.eval()
    values = []
    for start in range(0, len(pairs), batch_size):
        with student.placement.scope():
            chosen, rejected = pair_logps(student.backbone, pairs[start:start + batch_size], pad_id)
        values += torch.stack([chosen, rejected], -1).tolist()
    student.model.train()
    write_json_atomic(path, values)
    return student.placement.put(torch.tensor(values))


def run_dpo(config: Config, preferences_file: Path, out: Path, model: str, merged: Path | None = None,
            evaluate_factory=None) -> dict:
    """DPO from `model` (the SFT student), which is also the reference; the merged result goes to `merged`."""
    cfg = config.student
    dpo = cfg.dpo
    rows = [row for _, row in read_jsonl(preferences_file)]
    if not rows:
        raise UserError(f"{preferences_file}: no preference pairs (the teacher found no question with both a "
                        f"verified and a failed sample; add teacher.negatives_model); nothing to train on")
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    student = load_student(cfg, model, config.allow_network)
    pad = student.tokenizer.pad_token_id
    pairs = pair_examples(student.tokenizer, rows, cfg.max_length)
    # chosen and rejected share the prompt: a pair whose chosen side has no token left has none on either side
    empty = check_trainable([chosen for chosen, _ in pairs], cfg.max_length, preferences_file, "preference pairs")
    reference = reference_logps(student, pairs, pad, out / "reference_logps.json")
    rank, world = shard()      # with N processes a step takes N x batch_size pairs, each process its equal slice
    global_size = dpo.batch_size * world
    batches_per_epoch = math.ceil(len(pairs) / global_size)
    total_steps = max(1, round(batches_per_epoch * dpo.epochs / cfg.accumulation))
    print(f"student dpo: {len(pairs)} pairs, {total_steps} steps of {dpo.batch_size}, beta {dpo.beta}", flush=True)

    def micro_loss(step: int, micro: int):
        epoch, index = divmod(step * cfg.accumulation + micro, batches_per_epoch)
        order = list(range(len(pairs)))
        random.Random(config.seed * 1000 + epoch).shuffle(order)
        picked = [order[(index * global_size + j) % len(order)] for j in range(global_size)][rank::world]
        return pairs_loss(student, [pairs[i] for i in picked], reference[picked], dpo.beta)

    evaluate = evaluate_factory(student) if evaluate_factory else None
    settings = dataclasses.replace(cfg, learning_rate=dpo.learning_rate)
    result = train_loop(student, out, settings, total_steps, micro_loss, evaluate, name="dpo")
    merged = merged or out / "merged"
    finish_stage(student, out, merged)
    return {**result, "pairs": len(pairs), "pairs_without_tokens": empty, "final_loss": result["final"].get("loss"),
            "merged": str(merged)}


def pairs_loss(student, pairs: list[tuple[dict, dict]], reference: torch.Tensor, beta: float
               ) -> tuple[torch.Tensor, dict]:
    """DPO loss of a batch of pairs given their reference log-probabilities [n, 2], with the implicit reward's
    accuracy and mean margin."""
    chosen, rejected = pair_logps(student.backbone, pairs, student.tokenizer.pad_token_id)
    loss = dpo_loss(chosen, rejected, reference[:, 0], reference[:, 1], beta)
    margin = ((chosen - reference[:, 0]) - (rejected - reference[:, 1])).detach()
    return loss, {"reward_accuracy": float((margin > 0).float().mean()), "margin": float(margin.mean())}
