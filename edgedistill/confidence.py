"""Confidence signals that survive new wordings, and the small fitted calibrator that combines them.

Agreement alone (how many of k sampled answers give the greedy answer's value), calibrated on dev questions worded
like train, said "likely right" of answers that were right 64-73% of the time on new wordings: a small model agrees
with itself on a wrong number as readily on a question it half understood. So the confidence reads four signals,
each a number in [0, 1] that a wording change does not move by itself:

    agreement             share of the k samples whose answer has the greedy answer's canonical value
    expression_agreement  share of the k samples that also write the greedy answer's expression (numbers only;
                          for options and labels it equals agreement): many ways to one value agree less
    grounded              1 when every number in the answer's expression is one the question shows (or that
                          number / 100, for a percentage), or a unit constant (60, 100, 1000, ...); 0 when the
                          model brought a number of its own. The calculator's expression makes this checkable
    sane                  1 when the answer reads as its type: a finite number >= 0, a listed option, a known label

A logistic regression over them (L2-regularised, fitted by Newton's method) turns them into the probability that
the answer is right. It is fitted on questions worded apart from train (`shopfloor:dev_reworded`), never on the
held-out split. "Likely right" starts at the lowest probability whose fitting answers were at least 90% right with
evidence (the one-sided 95% lower bound of their precision, not its point estimate: a few dozen fitting answers
that are 91% right overall would otherwise mark everything), and never for a vetoed answer (not grounded, not sane).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edgedistill.calculator import ANNOTATION
from edgedistill.checkers import canonical, extract_answer
from edgedistill.expressions import CONSTANTS, key, literals, question_numbers, simplify
from edgedistill.formats import answer_line, user_message
from edgedistill.records import Question
from edgedistill.results import ResultRow

SIGNALS = ("agreement", "expression_agreement", "grounded", "sane")


@dataclass(frozen=True)
class Signals:
    agreement: float
    expression_agreement: float
    grounded: float
    sane: float

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in SIGNALS]


def expression_of(line: str | None) -> str | None:
    """The expression of an Answer line's (last) calculator annotation, normalised; None without one."""
    found = ANNOTATION.findall(line or "")
    return simplify("".join(found[-1][0].split())) if found else None


def grounded(expression: str | None, question: Question) -> bool:
    """Every number of the expression is shown by the question (as written, or as a percentage's fraction: 3 ->
    0.03 or 0.97) or is a unit constant. No expression (a plain number, an option, a label): nothing was brought in, so True."""
    if not expression:
        return True
    shown = question_numbers(user_message(question))
    percents = {key(float(n) / 100) for n in shown} | {key(1 - float(n) / 100) for n in shown if float(n) < 100}
    allowed = shown | CONSTANTS | percents
    return all(n in allowed for n in literals(expression))


def sane(answer: str | None, question: Question) -> bool:
    """The answer reads as its type: a canonical form exists, a number is finite and not negative (shop-floor
    quantities, rates and times are never below zero; a negative one is a subtraction the wrong way round), and a
    table answer is rows (or "not in the tables"), not a refused or failed query."""
    value = canonical(answer, question)
    if value is None:
        return False
    if question.answer_type == "rows":    # a query the tool refused or could not run answered nothing
        return not value.startswith(("refused", "the query failed"))
    if question.answer_type != "number":
        return True
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and number >= 0


def signals_of(question: Question, greedy_text: str, sampled_texts: list[str | None]) -> Signals:
    """The four signals of one answer: the greedy completion and the k sampled ones (texts or Answer lines)."""
    answer = extract_answer(greedy_text, question.answer_type)
    mine = canonical(answer, question)
    sampled = [canonical(extract_answer(t or "", question.answer_type), question) for t in sampled_texts]
    k = max(1, len(sampled_texts))
    # metrics.agreement's count, written here: the kernel's calibration imports this module and metrics imports it
    agreeing = 0 if mine is None else sum(s == mine for s in sampled)
    expression = expression_of(answer_line(greedy_text))
    if question.answer_type == "number" and expression is not None:
        same_way = sum(s == mine and expression_of(answer_line(t or "") or t) == expression
                       for s, t in zip(sampled, sampled_texts))
    else:
        same_way = agreeing
    return Signals(agreement=agreeing / k, expression_agreement=same_way / k,
                   grounded=float(grounded(expression, question)), sane=float(sane(answer, question)))


@dataclass
class CombinedConfidence:
    """P(right) = sigmoid(bias + weights . signals), over `signals` (their names, in order)."""
    signals: list[str]
    weights: list[float]
    bias: float

    def probability(self, signals: Signals) -> float:
        values = [getattr(signals, name) for name in self.signals]
        return _sigmoid(self.bias + sum(w * v for w, v in zip(self.weights, values)))

    def to_dict(self) -> dict:
        return asdict(self)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def fit_logistic(features: list[list[float]], corrects: list[bool], l2: float = 1.0, iterations: int = 50
                 ) -> tuple[list[float], float]:
    """(weights, bias) minimising the mean log-loss + l2/(2n) |weights|^2 (the bias unpenalised), by Newton's
    method: the loss is convex, so a few steps reach its one minimum. The penalty keeps a signal that perfectly
    separates a few fitting questions from an infinite weight."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(corrects, dtype=np.float64)
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.diag([l2] * d + [0.0])
    theta = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return [float(w) for w in theta[:d]], float(theta[d])


def fit_combined(signals: list[Signals], corrects: list[bool], l2: float = 1.0) -> CombinedConfidence:
    if len(signals) != len(corrects) or not signals:
        raise ValueError("one correctness flag per answer's signals, and at least one answer")
    weights, bias = fit_logistic([s.vector() for s in signals], corrects, l2)
    return CombinedConfidence(list(SIGNALS), [round(w, 5) for w in weights], round(bias, 5))


def cross_fitted(signals: list[Signals], corrects: list[bool], folds: int = 5, l2: float = 1.0) -> list[float]:
    """Each answer's probability from a model fitted on the other folds (positions i % folds), so none is judged
    by a fit that saw it."""
    probabilities = [0.0] * len(signals)
    for fold in range(min(folds, len(signals))):
        fit_at = [i for i in range(len(signals)) if i % folds != fold]
        if not fit_at:
            continue
        model = fit_combined([signals[i] for i in fit_at], [corrects[i] for i in fit_at], l2)
        for i in range(fold, len(signals), folds):
            probabilities[i] = model.probability(signals[i])
    return probabilities


def vetoed(signals: Signals) -> bool:
    """Never "likely right", whatever the fit says: a computation over a number the question does not show, or an
    answer that does not read as its type. A fit can give these signals no weight when its questions never show
    them (every dev_reworded answer was grounded and sane), and users' questions do."""
    return not signals.grounded or not signals.sane


# "Likely right" claims at least 90% right. From a few dozen fitting answers that claim needs evidence, not a point
# estimate: the threshold must keep the one-sided 95% lower bound (Wilson) of its precision at 90% or above, so 1
# right of 1, or 42 of 46, is not enough, and 31 of 31 is.
LOWER_BOUND_Z = 1.645


def wilson_lower(right: int, n: int, z: float = LOWER_BOUND_Z) -> float:
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n)


def threshold_for(probabilities: list[float], corrects: list[bool], precision: float = 0.9,
                  vetoes: list[bool] | None = None, z: float = LOWER_BOUND_Z) -> dict:
    """The lowest probability p, itself at least `precision`, such that the answers at p or above (those not vetoed)
    were at least `precision` right with confidence: the lower bound of their precision at `precision` or above.
    {"at": p or None, "coverage", "precision"} of that choice (the most answers "likely right" may cover).

    Why p itself must reach `precision`: a threshold chosen by the precision of everything above it takes in
    answers of any probability while easier ones carry the average. Fitted on questions the student gets 93% right,
    that rule marked every answer, answers it put at 10% included; on harder questions those answers are wrong.
    Each answer called "likely right" must be likely right on its own."""
    vetoes = vetoes or [False] * len(probabilities)
    best = {"at": None, "coverage": 0.0, "precision": None}
    for p in sorted({q for q in probabilities if q >= precision}, reverse=True):
        chosen = [c for q, c, v in zip(probabilities, corrects, vetoes) if q >= p and not v]
        if chosen and wilson_lower(sum(chosen), len(chosen), z) >= precision:
            best = {"at": round(p, 4), "coverage": round(len(chosen) / len(corrects), 4),
                    "precision": round(sum(chosen) / len(chosen), 4)}
    return best


def selective(calibration, signals: list[Signals], corrects: list[bool]) -> dict:
    """How a calibration's "likely right" does on answers it was not fitted on: the share it marks (coverage), how
    many of those are right (precision; None when it marks none), and the precision/coverage curve of the
    probability it shows there."""
    # an answer the vetoes rule out is below every threshold, in the marks and in the curve alike, so the curve's
    # row at the app's threshold reads what the app marks
    probabilities = [0.0 if calibration.combined and vetoed(s) else calibration.probability_of(s) for s in signals]
    marked = [c for p, c in zip(probabilities, corrects) if p > 0 and calibration.is_likely_right(p)]
    return {"likely_right_coverage": round(len(marked) / len(corrects), 4) if corrects else 0.0,
            "likely_right_precision": round(sum(marked) / len(marked), 4) if marked else None,
            "likely_right_n": len(marked), "precision_coverage": precision_coverage(probabilities, corrects)}


def precision_coverage(probabilities: list[float], corrects: list[bool], points: int = 10) -> list[dict]:
    """The selective-answering curve: for thresholds at the deciles of the probabilities (highest first), the share
    of answers at or above it (coverage) and how many of those are right (precision)."""
    if not probabilities:
        return []
    ordered = sorted(probabilities, reverse=True)
    curve = []
    for step in range(1, points + 1):
        at = ordered[max(0, math.ceil(len(ordered) * step / points) - 1)]
        chosen = [c for p, c in zip(probabilities, corrects) if p >= at]
        point = {"at": round(at, 4), "coverage": round(len(chosen) / len(corrects), 4),
                 "precision": round(sum(chosen) / len(chosen), 4)}
        if not curve or curve[-1]["at"] != point["at"]:
            curve.append(point)
    return curve


def signals_of_rows(rows: list[ResultRow], questions: list[Question]) -> list[Signals]:
    """The signals of stored evaluation rows (an EvalResult's rows: id, greedy text, sampled Answer lines),
    each read with its question."""
    by_id = {q.id: q for q in questions}
    return [signals_of(by_id[row.id], row.text, row.sampled or []) for row in rows]
