"""Sample-based metrics shared by training (dev evaluation) and the eval stage."""
from __future__ import annotations

from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n >= k samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Not "any of the first k", which is noisier and depends on the sample order."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def sampled_scores(generator, questions, k: int = 4, instruction: str | None = None, shots=(),
                   calculator: bool = True, max_new_tokens: int = 48, temperature: float = 0.7, seed: int = 0,
                   batch_size: int = 64, progress: str | None = None) -> dict:
    """Correct answers of one greedy decode and of k samples per question (both with the calculator, stopped at the
    end of the Answer line): {"greedy": [bool], "pass@k": sum, "maj@k": sum, "tokens": [tokens to the answer]}.

    The same scoring for the dev evaluation during training and for the eval stage, so their numbers agree.
    pass@k is the unbiased estimator with n = k samples; maj@k is right when the most frequent answer is."""
    from edgedistill.checkers import extract_answer, is_correct, majority
    from edgedistill.formats import INSTRUCTION, chat
    from edgedistill.generate import Sampling
    conversations = [chat(q, shots, instruction=instruction or INSTRUCTION) for q in questions]
    greedy = generator.generate(conversations, Sampling(max_new_tokens=max_new_tokens, calculator=calculator),
                                batch_size=batch_size, progress=progress and f"{progress} greedy")
    scores = {"greedy": [is_correct(extract_answer(t, q.answer_type), q) for t, q in zip(greedy, questions)],
              "pass@k": 0.0, "maj@k": 0}
    if k > 1:
        sampled = generator.generate([c for c in conversations for _ in range(k)],
                                     Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                              calculator=calculator),
                                     batch_size=batch_size, progress=progress and f"{progress} x{k}")
        for i, q in enumerate(questions):
            answers = [extract_answer(t, q.answer_type) for t in sampled[i * k:(i + 1) * k]]
            scores["pass@k"] += pass_at_k(k, sum(is_correct(a, q) for a in answers), k)
            vote, _ = majority(answers, q)
            scores["maj@k"] += vote is not None and is_correct(vote, q)
    tokenizer = getattr(generator, "tokenizer", None)
    scores["tokens"] = [len(tokenizer.encode(t, add_special_tokens=False)) for t in greedy] if tokenizer else []
    return scores
