"""Which questions to fit the app's confidence on: the eval stage's combined confidence (edgedistill/confidence.py,
evals/compare.fitted_calibration) fitted on stored results of one or more fitting sets, then judged on a stored
result of other questions. No decoding: every result must hold k > 1 sampled Answer lines.

    .venv/bin/python benchmarks/confidence_fit_sets.py \
        --fit runs/plant/eval/gguf-dev.json=shopfloor:dev_reworded \
        --fit runs/plant-evolved/results/student-Q6_K.gguf__shopfloor_evolved.json=shopfloor:evolved \
        --judge runs/plant/eval/gguf.json=shopfloor:heldout

Each argument is RESULT=QUESTIONS (the result file, and the split or file its rows answer). Prints, per fitting
choice (each --fit alone, then all pooled), the threshold "likely right" gets on the fitting answers and what it
gives on the judged ones: coverage and precision.
"""
from __future__ import annotations

import argparse
import json

from edgedistill.config import EvalConfig
from edgedistill.confidence import selective, signals_of_rows
from edgedistill.datasets import load_benchmark
from edgedistill.evals.compare import fitted_calibration
from edgedistill.results import EvalResult, ResultRow


def rows_of(argument: str) -> tuple[list[ResultRow], list, str, int]:
    path, _, data = argument.partition("=")
    result = EvalResult.from_dict(json.loads(open(path).read()))
    rows = [row for row in result.rows if row.agreement is not None]
    if not rows:
        raise SystemExit(f"{path}: no sampled answers (evaluate with k > 1)")
    return rows, load_benchmark(data), data, result.k


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="append", required=True, help="RESULT=QUESTIONS, repeatable")
    parser.add_argument("--judge", required=True, help="RESULT=QUESTIONS: the answers it is judged on")
    args = parser.parse_args()
    fits = [rows_of(a) for a in args.fit]
    judge_rows, judge_questions, judge_data, k = rows_of(args.judge)
    judged = signals_of_rows(judge_rows, judge_questions), [row.correct for row in judge_rows]
    choices = [[f] for f in fits] + ([fits] if len(fits) > 1 else [])
    print(f"judged on {judge_data}: {len(judge_rows)} answers, {sum(judged[1])} right")
    for chosen in choices:
        rows = [row for f in chosen for row in f[0]]
        questions = [q for f in chosen for q in f[1]]
        corrects = [row.correct for row in rows]
        calibration = fitted_calibration([row.agreement for row in rows], corrects, EvalConfig(samples=k),
                                         " + ".join(f[2] for f in chosen), "model",
                                         signals_of_rows(rows, questions))
        found = selective(calibration, *judged)
        print(f"fit on {' + '.join(f[2] for f in chosen)} ({len(rows)} answers, {sum(corrects)} right): likely "
              f"right from {calibration.likely_right_at} (fitting coverage "
              f"{calibration.extra['likely_right_coverage']:.1%}, precision "
              f"{calibration.extra['likely_right_precision']}); weights {calibration.combined}; on {judge_data}: "
              f"coverage {found['likely_right_coverage']:.1%}, precision {found['likely_right_precision']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
