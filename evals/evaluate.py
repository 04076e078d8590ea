"""Evaluation: greedy, with the calculator, stopped at the end of the Answer line; pass@1 with a 95% interval.

`evaluate(generator, questions)` scores any generator the kernel makes (any model the resolver takes). The base
model is judged with the same instruction plus two worked examples as earlier chat turns (`shots`), so it is
judged on ability, not on format; a fine-tuned student gets none.
"""
from __future__ import annotations

import math
import time

from edgedistill.checkers import extract_answer, is_correct
from edgedistill.formats import chat
from edgedistill.generate import Sampling
from edgedistill.records import Question


def wilson_interval(correct: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval for a proportion: sane at 0/n and n/n, unlike the normal approximation."""
    if n == 0:
        return [0.0, 0.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def evaluate(generator, questions: list[Question], shots: list[tuple[Question, str]] = (), batch_size: int = 16,
             max_new_tokens: int = 48, label: str = "eval") -> dict:
    started = time.time()
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, stop_after_answer=True)
    texts = generator.generate([chat(q, shots) for q in questions], sampling, batch_size=batch_size, progress=label)
    rows = []
    for q, text in zip(questions, texts):
        predicted = extract_answer(text, q.answer_type)
        rows.append({"id": q.id, "reference": q.answer, "predicted": predicted, "correct": is_correct(predicted, q),
                     "text": text})
    correct = sum(r["correct"] for r in rows)
    seconds = time.time() - started
    return {"n": len(rows), "correct": correct, "pass@1": round(correct / len(rows), 4),
            "ci95": wilson_interval(correct, len(rows)), "seconds": round(seconds, 1),
            "seconds_per_question": round(seconds / len(rows), 3), "shots": len(shots), "rows": rows}


def evaluate_k(generator, questions: list[Question], k: int = 4, instruction: str | None = None,
               shots: list[tuple[Question, str]] = (), calculator: bool = True, max_new_tokens: int = 48,
               temperature: float = 0.7, seed: int = 0, batch_size: int = 64, label: str = "eval") -> dict:
    """pass@1 (greedy, with a 95% interval), pass@k and maj@k (k samples at `temperature`), and the mean tokens to
    the answer (the kernel's `sampled_scores`, the same as the dev evaluation during training).

    Every decode stops at the end of the Answer line, so the tokens counted are the tokens to the answer: the
    answer line alone for an answer-first model, the whole reasoning plus the answer for a rationale-first one."""
    from edgedistill.metrics import sampled_scores
    started = time.time()
    scores = sampled_scores(generator, questions, k, instruction, shots, calculator, max_new_tokens, temperature,
                            seed, batch_size, progress=label)
    n, right = len(questions), sum(scores["greedy"])
    return {"n": n, "pass@1": round(right / n, 4), "ci95": wilson_interval(right, n),
            f"pass@{k}": round(scores["pass@k"] / n, 4), f"maj@{k}": round(scores["maj@k"] / n, 4),
            "tokens_to_answer": round(sum(scores["tokens"]) / max(1, len(scores["tokens"])), 1),
            "seconds": round(time.time() - started, 1)}
