"""Confidence that means something: how often the model was right, on held-out questions, when k of its sampled
answers agreed with its greedy one.

The signal is agreement: the app (and the evaluation) decode one greedy answer and k sampled ones (temperature T,
calculator on, stopped at the end of the Answer line) and count the samples whose canonical answer equals the greedy
one's: 0..k. Raw agreement / k is not a probability of being right: a small model can agree with itself on a wrong
number. So the evaluation stage fits, per agreement level, the fraction of questions answered correctly (a
Beta(1, 1) prior keeps an empty level at 1/2, and pooling adjacent violators keeps more agreement from ever meaning
less confidence), and saves it beside the model; the app reads it and shows that probability, saying how many
questions of which data it rests on. Without such a file the app shows raw agreement and says it is uncalibrated.

Metrics: expected calibration error (ECE, the count-weighted gap between confidence and accuracy over bins),
the Brier score (mean squared error of the confidence against 0/1 correctness) and the reliability bins behind a
reliability diagram.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgedistill import UserError
from edgedistill.records import write_json_atomic


@dataclass
class Calibration:
    k: int                                  # sampled answers per question
    temperature: float                      # their sampling temperature
    accuracy: list[float]                   # P(greedy answer right | j of k samples agree), j = 0..k
    counts: list[int]                       # evaluation questions at each level
    n: int = 0                              # questions fitted on
    data: str = ""                          # which evaluation data
    model: str = ""                         # which model produced the answers
    signal: str = "agreement of k sampled answers with the greedy answer"
    extra: dict = field(default_factory=dict)   # ECE/Brier before and after, when the evaluation measured them
    # "likely right" from this probability on: the lowest at which the fitting data's answers were at least
    # LIKELY_RIGHT_PRECISION right (None: no level was)
    likely_right_at: float | None = None
    # the signals' combination (edgedistill.confidence.CombinedConfidence as a dict), when fitted: the probability
    # then comes from it, and `likely_right_at` is a threshold on it; None: the agreement table above
    combined: dict | None = None

    def probability(self, agreeing: int) -> float:
        return self.accuracy[max(0, min(self.k, agreeing))]

    def probability_of(self, signals) -> float:
        """P(right) of an answer from its `confidence.Signals`: the fitted combination when there is one, else the
        agreement table."""
        if self.combined:
            from edgedistill.confidence import CombinedConfidence
            return CombinedConfidence(**self.combined).probability(signals)
        return self.probability(round(signals.agreement * self.k))

    def likely_right(self, agreeing: int) -> bool:
        return self.likely_right_at is not None and self.probability(agreeing) >= self.likely_right_at

    def is_likely_right(self, probability: float) -> bool:
        return self.likely_right_at is not None and probability >= self.likely_right_at


LIKELY_RIGHT_PRECISION = 0.9


def likely_right_threshold(calibration: Calibration, agreements: list[int], corrects: list[bool],
                           precision: float = LIKELY_RIGHT_PRECISION) -> dict:
    """The lowest calibrated probability p such that the answers at p or above were `precision` right with
    confidence (the one-sided 95% lower bound of their precision, edgedistill.confidence.threshold_for) on these
    (fitting) questions: the most answers the app may call "likely right". {"at": p or None, "coverage",
    "precision"} of that choice. The same rule as the combined confidence's, so 9 right of 10 is not enough."""
    from edgedistill.confidence import threshold_for
    return threshold_for([calibration.probability(a) for a in agreements], corrects, precision)


def selective(calibration: Calibration, agreements: list[int], corrects: list[bool]) -> dict:
    """How the calibration's "likely right" does on other questions: the share of them it marks (coverage) and how
    many of those are right (precision; None when it marks none)."""
    marked = [c for a, c in zip(agreements, corrects) if calibration.likely_right(a)]
    return {"likely_right_coverage": round(len(marked) / len(corrects), 4) if corrects else 0.0,
            "likely_right_precision": round(sum(marked) / len(marked), 4) if marked else None,
            "likely_right_n": len(marked)}


def fit_calibration(agreements: list[int], corrects: list[bool], k: int, temperature: float, data: str = "",
                    model: str = "") -> Calibration:
    """Accuracy per agreement level 0..k: (right + 1) / (questions + 2), then made non-decreasing in agreement."""
    if len(agreements) != len(corrects):
        raise ValueError("one agreement count per correctness flag")
    if any(not 0 <= a <= k for a in agreements):
        raise ValueError(f"agreement counts must lie in 0..{k}")
    counts = [0] * (k + 1)
    right = [0] * (k + 1)
    for a, c in zip(agreements, corrects):
        counts[a] += 1
        right[a] += bool(c)
    smoothed = [(r + 1) / (n + 2) for r, n in zip(right, counts)]
    # weighted by the questions behind each level: an empty level (prior 1/2) takes its neighbours' value
    accuracy = pool_adjacent_violators(smoothed, [n + 1e-3 for n in counts])
    return Calibration(k, temperature, [round(p, 4) for p in accuracy], counts, len(agreements), data, model)


def pool_adjacent_violators(values: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to `values` in weighted least squares (isotonic regression)."""
    blocks: list[list[float]] = []          # [weighted mean, weight, length]
    for v, w in zip(values, weights):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [v for v, _, n in blocks for _ in range(n)]


def reliability_bins(confidences: list[float], corrects: list[bool], bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1]: {lo, hi, n, confidence (mean), accuracy}; empty bins are left out."""
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(p, c) for p, c in zip(confidences, corrects) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if members:
            table.append({"lo": lo, "hi": hi, "n": len(members),
                          "confidence": sum(p for p, _ in members) / len(members),
                          "accuracy": sum(bool(c) for _, c in members) / len(members)})
    return table


def expected_calibration_error(confidences: list[float], corrects: list[bool], bins: int = 10) -> float:
    """sum over bins of (bin size / n) * |mean confidence - accuracy|."""
    n = len(confidences)
    if n == 0:
        return 0.0
    return sum(b["n"] / n * abs(b["confidence"] - b["accuracy"]) for b in reliability_bins(confidences, corrects, bins))


def brier_score(confidences: list[float], corrects: list[bool]) -> float:
    """mean of (confidence - correct)^2: 0 is perfect, 0.25 is a constant 1/2."""
    if not confidences:
        return 0.0
    return sum((p - float(bool(c))) ** 2 for p, c in zip(confidences, corrects)) / len(confidences)


def calibration_path_for(model: str | Path) -> Path:
    """Where the app looks for a model's calibration: `<file>.calibration.json` beside a file (a GGUF),
    `calibration.json` inside a folder (a Hugging Face or ONNX folder)."""
    path = Path(str(model))
    return path / "calibration.json" if path.is_dir() else path.with_name(path.name + ".calibration.json")


def calibration_of(model: str | Path) -> Path | None:
    """The app's calibration for `model`: the file beside it (`edgedistill eval --calibrate` writes one there), else
    the one its run's eval stage fitted (named in the manifest's eval outputs, kept in the run's eval folder); None
    when there is neither."""
    from edgedistill.rundir import manifest_stages, run_folder_of, written_in_run
    beside = calibration_path_for(model)
    if beside.is_file():
        return beside
    root = run_folder_of(model)
    stages = manifest_stages(root) if root is not None else None
    if not stages:
        return None
    eval_stage = stages.get("eval")
    outputs = eval_stage.get("outputs") if isinstance(eval_stage, dict) else None
    fitted = outputs.get("calibration") if isinstance(outputs, dict) else None
    name = Path(str(model)).name
    for written, calibration in fitted.items() if isinstance(fitted, dict) else ():
        if Path(str(written)).name == name:
            found = written_in_run(root, calibration, "eval")
            if found is not None and found.is_file():
                return found
    return None


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    write_json_atomic(path, asdict(calibration))


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        calibration = Calibration(**raw)
    except FileNotFoundError:
        raise UserError(f"{path}: no such calibration file (`edgedistill eval --calibrate` writes one)") from None
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"{path}: not a calibration file ({exc}); write it again with "
                        f"`edgedistill eval --calibrate`") from None
    if calibration.combined is not None:
        from edgedistill.confidence import SIGNALS
        combined = calibration.combined
        if not isinstance(combined, dict) or set(combined) != {"signals", "weights", "bias"} \
                or not set(combined["signals"]) <= set(SIGNALS) or len(combined["weights"]) != len(combined["signals"]):
            raise UserError(f"{path}: its 'combined' entry is not a fitted combination of {', '.join(SIGNALS)}; "
                            f"write it again with `edgedistill eval --calibrate`")
    if len(calibration.accuracy) != calibration.k + 1:
        raise UserError(f"{path}: needs {calibration.k + 1} accuracy levels for k={calibration.k}, "
                        f"has {len(calibration.accuracy)}")
    return calibration
