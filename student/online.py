"""On-policy RL recipe: GRAO (arXiv 2508.07750) and the inference-time objectives pass@k, max@k, majority vote
and mean (Tang et al., arXiv 2503.19595), one loop.

Per step, for `prompts_per_step` questions of the teacher's SFT data (picked from (seed, step), so a resumed run
draws the same):
    sample     G completions from the current policy, with the calculator, at `temperature`, seeded by the step
    verify     reward 1 when the answer checks against the question's reference, else 0 (the kernel's checkers)
    advantage  grao: rewards normalised over the G samples and the reference completion y (the teacher's verified
               answer, reward 1) together; pass / max / maj / mean: leave-one-out, optionally centred
    update     grao_loss on length-normalised log-likelihoods of the samples and y; policy_gradient_loss on
               summed log-likelihoods for the others. Tokens the calculator wrote are not the model's choices and
               stay out of the samples' log-likelihoods.

The completions are re-tokenised from their text (as SFT data is), so a log-likelihood is that of the canonical
tokenisation of what was sampled, which can differ from the sampled token path in rare merges.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from edgedistill import UserError
from edgedistill.checkers import canonical, extract_answer, is_correct
from edgedistill.config import Config
from edgedistill.generation import Sampling, encode_with_calculator_flags, render_prompt
from edgedistill.records import Question, read_jsonl
from edgedistill.student.batching import check_trainable, collate, pad_by_row, token_logps, tokenise
from edgedistill.student.loop import finish_stage, load_student, shard, sharded_launch, train_loop
from edgedistill.student.policy_sampler import policy_sampler
from edgedistill.student.objectives import grao_advantages, grao_loss, loo_advantages, mean_logp, policy_gradient_loss, \
    sequence_logp


def question_of(row: dict) -> Question:
    """The question an SFT row asks, with its reference answer (from the teacher's record, or read from the
    verified completion itself for data written before the teacher recorded it)."""
    text = row["completion"][-1]["content"]
    kind = row.get("answer_type", "number")
    answer = row.get("answer") or extract_answer(text, kind)
    return Question(id=row["id"], question=row["prompt"][-1]["content"], answer=answer, answer_type=kind,
                    options=row.get("options"))


def sample_examples(tokenizer, prompt: list[dict], texts: list[str], max_length: int) -> tuple[list[dict], list]:
    """Sampled completions as training examples (no EOS appended: where a sample stopped is not known from its
    text), with a per-completion-token flag: True where the model chose the token, False where the calculator did."""
    prompt_ids = tokenizer.encode(render_prompt(tokenizer, prompt), add_special_tokens=False)
    examples, chosen_by_model = [], []
    for text in texts:
        ids, forced = encode_with_calculator_flags(tokenizer, text)
        room = max(0, max_length - len(prompt_ids))
        ids, forced = ids[:room], forced[:room]
        examples.append({"input_ids": (prompt_ids + ids)[:max_length], "labels": ([-100] * len(prompt_ids) + ids)[:max_length],
                         "weight": 1.0, "answer_tokens": 0, "index": len(examples)})
        chosen_by_model.append([not f for f in forced])
    return examples, chosen_by_model


def run_online(config: Config, sft_file: Path, out: Path, model: str, merged: Path | None = None,
               evaluate_factory=None) -> dict:
    cfg, online = config.student, config.student.online
    if sharded_launch():
        raise UserError("online RL samples from the whole policy in every process, which FSDP and DeepSpeed shard: "
                        "run it with DDP (configs/accelerate/ddp.yaml) or in one process")
    rows = [row for _, row in read_jsonl(sft_file)]
    if not rows:
        raise UserError(f"{sft_file}: no questions with a verified reference; nothing to train on")
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    student = load_student(cfg, model, config.allow_network)
    tokenizer, pad = student.tokenizer, student.tokenizer.pad_token_id
    sampler = policy_sampler(online, student, model, config.allow_network)
    questions = [question_of(row) for row in rows]
    references = tokenise(tokenizer, rows, cfg.max_length)          # y: the teacher's verified completions
    # a sample is cut at max_length like its reference: a prompt that leaves y no token leaves the samples none
    empty = check_trainable(references, cfg.max_length, sft_file, "questions")
    G = online.samples
    print(f"student online ({online.objective}): {online.steps} steps of {online.prompts_per_step} prompts x {G} "
          f"samples", flush=True)

    rank, world = shard()      # with N processes (DDP) a step takes N x prompts_per_step prompts, each its slice

    def micro_loss(step: int, micro: int):
        everyone = random.Random(config.seed * 1_000_003 + step * 131 + micro).sample(
            range(len(rows)), min(online.prompts_per_step * world, len(rows)))
        picked = everyone[rank::world]
        sampling = Sampling(max_new_tokens=online.max_new_tokens, temperature=online.temperature,
                            stop_after_answer=False, seed=config.seed + step * 1009 + micro + rank * 7919)
        student.model.eval()
        # outside the step's autocast: a sample is drawn as the model decodes everywhere else (on this CPU, fp32)
        with student.placement.full_precision():
            texts = sampler.generate([rows[i]["prompt"] for i in picked for _ in range(G)], sampling, step)
        student.model.train()
        rewards, answers, examples, flags = [], [], [], []
        for n, i in enumerate(picked):
            group = texts[n * G:(n + 1) * G]
            q = questions[i]
            predicted = [extract_answer(t, q.answer_type) for t in group]
            rewards.append([float(is_correct(p, q)) for p in predicted])
            answers.append([canonical(p, q) for p in predicted])
            made, chosen = sample_examples(tokenizer, rows[i]["prompt"], group, cfg.max_length)
            examples += made
            flags += chosen
        batch = collate(examples, pad)
        logps, mask = token_logps(student.backbone, batch)
        mask = mask * model_choice_mask(flags, mask)
        R = torch.tensor(rewards)
        if online.objective == "grao":
            ref_logps, ref_mask = token_logps(student.backbone, collate([references[i] for i in picked], pad))
            A, A_y = grao_advantages(R, 1.0)
            loss = grao_loss(mean_logp(logps, mask).view(len(picked), G), mean_logp(ref_logps, ref_mask), A, A_y,
                             online.beta, online.lam)
        else:
            A = torch.tensor([loo_advantages(online.objective, r, a, online.centred) for r, a in zip(rewards, answers)])
            loss = policy_gradient_loss(sequence_logp(logps, mask).view(len(picked), G), A)
        return loss, {"reward": float(R.mean()), "groups_with_signal": float((A.abs().sum(-1) > 0).float().mean())}

    evaluate = evaluate_factory(student) if evaluate_factory else None
    settings = dataclasses.replace(cfg, learning_rate=online.learning_rate, accumulation=1,
                                   warmup_steps=min(cfg.warmup_steps, max(1, online.steps // 10)))
    result = train_loop(student, out, settings, online.steps, micro_loss, evaluate, name=online.objective)
    merged = merged or out / "merged"
    finish_stage(student, out, merged)
    return {**result, "questions_without_tokens": empty, "final_loss": result["final"].get("loss"),
            "merged": str(merged)}


def model_choice_mask(flags: list[list[bool]], mask: torch.Tensor) -> torch.Tensor:
    """[rows, T] 1 where the model chose the completion token, 0 where the calculator wrote it (or padding)."""
    rows = torch.tensor([r for r, row in enumerate(flags) for _ in row], dtype=torch.long)
    values = torch.tensor([float(f) for row in flags for f in row])
    padded, _ = pad_by_row(values, rows, len(flags))
    return padded[:, :mask.shape[1]] if padded.shape[1] >= mask.shape[1] else \
        torch.nn.functional.pad(padded, (0, mask.shape[1] - padded.shape[1]))
