"""Sample-based metrics shared by training (dev evaluation), the eval stage and the app's confidence."""
from __future__ import annotations

import time
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n >= k samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Not "any of the first k", which is noisier and depends on the sample order."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def count_tokens(generator, texts: list[str]) -> list[int]:
    """Completion tokens per text, with the generator's own tokenizer; [] when it has none (a server, a fake)."""
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    if callable(getattr(generator, "encode", None)):   # llama.cpp: its own vocabulary
        return [len(generator.encode(t)) for t in texts]
    return []


def agreement(greedy_answer: str | None, sampled_answers: list[str | None], question) -> int:
    """How many sampled answers have the greedy answer's canonical form: the app's confidence signal, which the eval
    stage calibrates (0 when the greedy answer is not a valid answer)."""
    from edgedistill.checkers import canonical
    mine = canonical(greedy_answer, question)
    return 0 if mine is None else sum(canonical(a, question) == mine for a in sampled_answers)


def sampled_scores(generator, questions, k: int = 4, instruction: str | None = None, shots=(),
                   calculator: bool = True, max_new_tokens: int = 48, temperature: float = 0.7, seed: int = 0,
                   batch_size: int = 64, progress: str | None = None) -> dict:
    """Correct answers of one greedy decode and of k samples per question (both stopped at the end of the Answer
    line): {"greedy": [bool], "pass@k": sum, "maj@k": sum, "tokens": [tokens to the answer], ...}.

    The same scoring for the dev evaluation during training and for the eval stage, so their numbers agree.
    pass@k is the unbiased estimator with n = k samples; maj@k is right when the most frequent answer is.
    Per question it also returns what the evaluation report and the confidence calibration need:
    "greedy_texts", "greedy_answers", "sample_correct" (c of k), "majority_correct" and "agreement" (how many of
    the k samples have the greedy answer's canonical form: the app's confidence signal), and the decode seconds.
    """
    from edgedistill.checkers import extract_answer, is_correct, majority
    from edgedistill.formats import INSTRUCTION, chat
    from edgedistill.generate import Sampling
    conversations = [chat(q, shots, instruction=instruction or INSTRUCTION) for q in questions]
    started = time.time()
    greedy = generator.generate(conversations, Sampling(max_new_tokens=max_new_tokens, calculator=calculator),
                                batch_size=batch_size, progress=progress and f"{progress} greedy")
    greedy_answers = [extract_answer(t, q.answer_type) for t, q in zip(greedy, questions)]
    scores = {"greedy": [is_correct(a, q) for a, q in zip(greedy_answers, questions)],
              "pass@k": 0.0, "maj@k": 0, "greedy_texts": greedy, "greedy_answers": greedy_answers,
              "greedy_seconds": round(time.time() - started, 2), "sample_correct": [], "majority_correct": [],
              "agreement": [], "sampled_seconds": 0.0}
    if k > 1:
        started = time.time()
        sampled = generator.generate([c for c in conversations for _ in range(k)],
                                     Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                              calculator=calculator),
                                     batch_size=batch_size, progress=progress and f"{progress} x{k}")
        scores["sampled_seconds"] = round(time.time() - started, 2)
        for i, q in enumerate(questions):
            answers = [extract_answer(t, q.answer_type) for t in sampled[i * k:(i + 1) * k]]
            right = sum(is_correct(a, q) for a in answers)
            vote, _ = majority(answers, q)
            scores["sample_correct"].append(right)
            scores["majority_correct"].append(vote is not None and is_correct(vote, q))
            scores["agreement"].append(agreement(greedy_answers[i], answers, q))
            scores["pass@k"] += pass_at_k(k, right, k)
            scores["maj@k"] += scores["majority_correct"][-1]
    scores["tokens"] = count_tokens(generator, greedy)
    return scores
