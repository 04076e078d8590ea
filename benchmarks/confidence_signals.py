"""Which confidence signal makes "likely right" cover the most answers at 90% precision: measured from stored
evaluation results, no decoding.

    .venv/bin/python benchmarks/confidence_signals.py --fit runs/x/eval/gguf-dev.json --judge runs/x/eval/gguf.json

Each result is a `metrics.evaluate` result with k > 1 (the eval stage's eval/<name>.json, or `edgedistill eval
--json` output), whose rows hold the greedy text and the k sampled Answer lines. Signals, each a level per question:

    value         how many of the k samples give the greedy answer's value (what the app uses today), 0..k
    value+expr    that, plus how many of them also write the greedy answer's expression, 0..2k: four samples that
                  reach 360 by `48*7.5` agree more than four that reach it four different ways

For each signal a calibration is fitted on `--fit` (isotonic, as the app's), the "likely right" threshold is the
lowest probability at which the --fit answers were >= 90% right, and `--judge` (other questions) says what that
threshold gives there: coverage and precision. Last line: `best=<signal> coverage=<judge coverage>`.
"""
from __future__ import annotations

import argparse
import json

from edgedistill.calibration import fit_calibration, likely_right_threshold, selective
from edgedistill.confidence import expression_of
from edgedistill.formats import answer_line
from edgedistill.results import ResultRow


def levels(rows: list[ResultRow], signal: str) -> tuple[list[int], int]:
    """(a level per row, the number of levels - 1)."""
    sampled = [r.sampled for r in rows if r.sampled]
    if not sampled:
        raise SystemExit("these results hold no sampled Answer lines: evaluate again with k > 1 (results stored "
                         "before 2026-12-02 lack them)")
    k = len(sampled[0])
    if signal == "value":
        return [r.agreement for r in rows], k
    out = []
    for r in rows:
        mine = expression_of(answer_line(r.text))
        same = sum(mine is not None and expression_of(s) == mine for s in r.sampled or [])
        out.append(r.agreement + min(same, r.agreement))
    return out, 2 * k


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", required=True, help="result whose questions the calibration is fitted on (dev)")
    parser.add_argument("--judge", required=True, help="result on other questions, to judge the threshold on")
    args = parser.parse_args()
    fit, judge = ([ResultRow.from_dict(row) for row in json.loads(open(path).read())["rows"]]
                  for path in (args.fit, args.judge))
    best, best_coverage = None, -1.0
    for signal in ("value", "value+expr"):
        fit_levels, top = levels(fit, signal)
        calibration = fit_calibration(fit_levels, [r.correct for r in fit], top, 0.7)
        threshold = likely_right_threshold(calibration, fit_levels, [r.correct for r in fit])
        calibration.likely_right_at = threshold["at"]
        judged = selective(calibration, levels(judge, signal)[0], [r.correct for r in judge])
        print(f"{signal:12} fit: likely right from P >= {threshold['at']} covers {threshold['coverage']:.1%} at "
              f"{threshold['precision']} | judge: coverage {judged['likely_right_coverage']:.1%}, precision "
              f"{judged['likely_right_precision']}")
        if judged["likely_right_coverage"] > best_coverage:
            best, best_coverage = signal, judged["likely_right_coverage"]
    print(f"best={best} coverage={best_coverage:.4f}")


if __name__ == "__main__":
    main()
