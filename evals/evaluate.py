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
               shots: list[tuple[Question, str]] = (), calculator: bool = True, max_new_tokens: int = 48, temperature: float = 0.7, seed: int = 0,
               batch_size: int = 64, label: str = "eval") -> dict:
    """pass@1 (greedy), pass@k and maj@k (k samples at `temperature`), and the mean tokens to the answer.

    Every decode stops at the end of the Answer line, so the tokens counted are the tokens to the answer: the
    answer line alone for an answer-first model, the whole reasoning plus the answer for a rationale-first one.
    pass@k is the unbiased estimator with n = k samples."""
    from edgedistill.checkers import majority
    from edgedistill.formats import INSTRUCTION
    from edgedistill.metrics import pass_at_k
    started = time.time()
    conversations = [chat(q, shots, instruction=instruction or INSTRUCTION) for q in questions]
    greedy = generator.generate(conversations, Sampling(max_new_tokens=max_new_tokens, calculator=calculator),
                                batch_size=batch_size, progress=f"{label} greedy")
    sampled = generator.generate([c for c in conversations for _ in range(k)],
                                 Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                          calculator=calculator), batch_size=batch_size, progress=f"{label} x{k}")
    right = [is_correct(extract_answer(t, q.answer_type), q) for t, q in zip(greedy, questions)]
    pass_k = maj_k = 0.0
    for i, q in enumerate(questions):
        answers = [extract_answer(t, q.answer_type) for t in sampled[i * k:(i + 1) * k]]
        pass_k += pass_at_k(k, sum(is_correct(a, q) for a in answers), k)
        vote, _ = majority(answers, q)
        maj_k += vote is not None and is_correct(vote, q)
    tokenizer = getattr(generator, "tokenizer", None)
    tokens = [len(tokenizer.encode(t, add_special_tokens=False)) for t in greedy] if tokenizer else []
    n = len(questions)
    return {"n": n, "pass@1": round(sum(right) / n, 4), "ci95": wilson_interval(sum(right), n),
            f"pass@{k}": round(pass_k / n, 4), f"maj@{k}": round(maj_k / n, 4),
            "tokens_to_answer": round(sum(tokens) / max(1, len(tokens)), 1),
            "seconds": round(time.time() - started, 1)}
