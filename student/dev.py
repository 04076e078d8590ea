"""Dev evaluation during training: greedy pass@1 and sampled maj@k on held-out dev questions, with the calculator.

Runs the model being trained as it is (LoRA not merged) through the kernel's own decoder, the one the evaluation
stage and the app use, so the numbers mean the same thing there.
"""
from __future__ import annotations

from edgedistill.generate import TransformersGenerator
from edgedistill.metrics import sampled_scores
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
    scores = sampled_scores(generator, questions, k, max_new_tokens=max_new_tokens, seed=seed)
    result = {"pass@1": sum(scores["greedy"]) / len(questions)}
    if k > 1:
        result[f"maj@{k}"] = scores["maj@k"] / len(questions)
    return {key: round(value, 4) for key, value in result.items()}
