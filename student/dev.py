"""Dev evaluation during training: greedy pass@1 and sampled maj@k on held-out dev questions, with the calculator.

Runs the model being trained as it is (LoRA not merged) through the kernel's own decoder, the one the evaluation
stage and the app use, so the numbers mean the same thing there.
"""
from __future__ import annotations

from edgedistill.datasets import load_benchmark
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.metrics import evaluate
from edgedistill.records import Question
from edgedistill.results import PASS_AT_1, maj_at


def dev_evaluator(config):
    """A factory: student -> (step -> {pass@1, maj@k}); None when dev evaluation is off."""
    cfg = config.student
    if not cfg.eval_every:
        return None
    questions = load_benchmark(config.data.dev, limit=cfg.dev_limit, columns=config.data.columns)   # any format the eval stage reads

    def factory(student):
        generator = TransformersGenerator(student.model, student.tokenizer)
        return lambda step: evaluate_dev(generator, questions, k=cfg.dev_samples, seed=config.seed + step)
    return factory


def evaluate_dev(generator, questions: list[Question], *, k: int, seed: int = 0, max_new_tokens: int = 48) -> dict:
    """{pass@1, maj@k (k > 1)} of the kernel's one evaluation, quietly (no progress bars)."""
    result = evaluate(generator, questions, k=k, seed=seed, max_new_tokens=max_new_tokens, label=None)
    return {PASS_AT_1: result.pass_at_1} | ({maj_at(k): result.maj_at_k} if result.maj_at_k is not None else {})
