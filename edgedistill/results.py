"""The names of an evaluation result's figures, written once (the gguf-py `constants.py` habit): the kernel's
evaluation (`metrics.evaluate`) writes them, and the CLI, the comparison, the eval stage, the report, the plots,
the export's parity report and the student's dev evaluation read them through these names, never retyped.

    result = evaluate(generator, questions, k=4)
    result[PASS_AT_1], result[CI95], result[pass_at(4)], result[maj_at(4)], result[ROWS]

`EvalResult` lists what a result holds; results travel as JSON (the stage's cache, report.json), so the type
describes the dict rather than replacing it.
"""
from __future__ import annotations

from typing import TypedDict

PASS_AT_1 = "pass@1"
PASS_AT_1_NO_CALCULATOR = "pass@1_no_calculator"      # greedy, the model's own numbers where it wrote <<expr=
PASS_AT_1_AT_DELIMITER = "pass@1_at_delimiter"        # the end-subset: stopped at the end of the Answer line
PASS_AT_1_FULL_TEXT = "pass@1_full_text"              # the end-subset: decoded to the end
CI95 = "ci95"                                         # the Wilson interval of pass@1
MAJ_CI95 = "maj_ci95"
ROWS = "rows"                                         # one per question: id, prediction, correct, agreement, ...


def pass_at(k: int) -> str:
    """The unbiased pass@k of k sampled answers."""
    return f"pass@{k}"


def maj_at(k: int) -> str:
    """The majority vote of k sampled answers."""
    return f"maj@{k}"


class EvalResult(TypedDict, total=False):
    n: int                     # questions scored (skipped ones not counted)
    k: int                     # sampled answers per question (0 or 1: greedy only)
    shots: int
    correct: int
    seconds: float
    skipped: int               # questions too long for the model
    topics: dict               # topic: {n, pass@1}
    rows: list[dict]
    # plus PASS_AT_1, CI95, pass_at(k), maj_at(k), MAJ_CI95, PASS_AT_1_NO_CALCULATOR, the calibration figures
    # (ece, brier, likely_right_*), and the names the comparison and the stage add (model, data, backend, key)
