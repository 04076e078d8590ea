"""Dev evaluation during training: greedy pass@1 and sampled maj@k on held-out dev questions, with the calculator.

Runs the model being trained as it is (LoRA not merged) through the kernel's own decoder, the one the evaluation
stage and the app use, so the numbers mean the same thing there.
"""
from __future__ import annotations

from edgedistill.checkers import extract_answer, is_correct, majority
from edgedistill.formats import chat
from edgedistill.generate import Sampling, TransformersGenerator
from edgedistill.records import Question, load_questions


def dev_evaluator(config):
    """A factory: student -> (step -> {"pass@1", "maj@k"}); None when dev evaluation is off."""
    cfg = config.student
    if not cfg.eval_every:
        return None
    questions = load_questions(config.data.dev, limit=cfg.dev_limit)

    def factory(student):
        generator = TransformersGenerator(student.model, student.tokenizer)
        return lambda step: evaluate_dev(generator, questions, cfg.dev_samples, seed=config.seed + step)
    return factory


def evaluate_dev(generator, questions: list[Question], k: int, seed: int = 0, max_new_tokens: int = 48) -> dict:
    conversations = [chat(q) for q in questions]
    greedy = generator.generate(conversations, Sampling(max_new_tokens=max_new_tokens), batch_size=64)
    result = {"pass@1": sum(is_correct(extract_answer(t, q.answer_type), q) for t, q in zip(greedy, questions))
              / len(questions)}
    if k > 1:
        sampled = generator.generate([c for c in conversations for _ in range(k)],
                                     Sampling(max_new_tokens=max_new_tokens, temperature=0.7, seed=seed), batch_size=64)
        right = 0
        for i, q in enumerate(questions):
            vote, _ = majority([extract_answer(t, q.answer_type) for t in sampled[i * k:(i + 1) * k]], q)
            right += vote is not None and is_correct(vote, q)
        result[f"maj@{k}"] = right / len(questions)
    return {key: round(value, 4) for key, value in result.items()}
