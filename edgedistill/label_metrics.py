"""Metrics for answers from a closed set (work-order labels, option letters), and the paired test of two models.

    accuracy   one label per question, so micro-F1 equals accuracy (pass@1, with its Wilson interval)
    macro-F1   the F1 of each reference label, averaged with equal weight: a model that always says the most common
               label scores its share in accuracy but little here. Its 95% interval is a seeded bootstrap over the
               questions (percentile, 1000 resamples), since F1 has no closed-form interval
    McNemar    two models on the same questions: only the questions one gets right and the other wrong (b and c)
               say which is better; the exact two-sided binomial test of b against b + c (McNemar 1947, exact
               form as recommended for small counts by Fagerland et al. 2013)

Rows are the evaluation's (`metrics.evaluate`'s `ResultRow`s): `reference` and `predicted` in their canonical forms are
compared through the question's answer type.
"""
from __future__ import annotations

import random
from collections import Counter
from math import comb


def macro_f1(references: list[str], predictions: list[str | None]) -> float:
    """Mean over the reference labels of F1 = 2 tp / (2 tp + fp + fn). A prediction outside the reference labels
    (or none) counts as a miss for the reference label only."""
    labels = sorted(set(references))
    if not labels:
        return 0.0
    tp, fp, fn = Counter(), Counter(), Counter()
    for reference, predicted in zip(references, predictions):
        if predicted == reference:
            tp[reference] += 1
        else:
            fn[reference] += 1
            if predicted is not None:
                fp[predicted] += 1
    return sum(2 * tp[x] / max(1, 2 * tp[x] + fp[x] + fn[x]) for x in labels) / len(labels)


def bootstrap_interval(references: list[str], predictions: list[str | None], *, resamples: int = 1000,
                       seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of macro-F1 over the questions."""
    rng, n = random.Random(seed), len(references)
    if not n:
        return [0.0, 0.0]
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        values.append(macro_f1([references[i] for i in picks], [predictions[i] for i in picks]))
    values.sort()
    return [round(values[int(0.025 * resamples)], 4), round(values[int(0.975 * resamples) - 1], 4)]


def label_scores(rows: list, canonical) -> dict:
    """accuracy (= micro-F1) and macro-F1 with its interval, from evaluation rows; `canonical(answer, row)` maps an
    answer to the form labels are compared in."""
    references = [canonical(r.reference, r) for r in rows]
    predictions = [canonical(r.predicted, r) for r in rows]
    right = sum(p is not None and p == ref for p, ref in zip(predictions, references))
    return {"accuracy": round(right / max(1, len(rows)), 4),
            "macro_f1": round(macro_f1(references, predictions), 4),
            "macro_f1_ci95": bootstrap_interval(references, predictions)}


def mcnemar(first: dict[str, bool], second: dict[str, bool]) -> dict:
    """The exact McNemar test on the questions both were scored on ({question id: correct}): b = right only by the
    first, c = right only by the second; p = P(a split at least this uneven | either is as likely)."""
    shared = sorted(set(first) & set(second))
    b = sum(first[i] and not second[i] for i in shared)
    c = sum(second[i] and not first[i] for i in shared)
    n = b + c
    tail = sum(comb(n, j) for j in range(0, min(b, c) + 1)) / 2 ** n if n else 1.0
    return {"n": len(shared), "only_first": b, "only_second": c, "p_value": round(min(1.0, 2 * tail), 4)}
