"""The run report: report.json (machine-readable) and report.md (for people), side by side in the run directory.

Its model table and plots are the comparison report's (evals/compare.py, evals/plots.py), so `edgedistill run` and
`edgedistill eval --out` print the same columns computed the same way.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edgedistill.records import write_json_atomic, write_text_atomic
from edgedistill.evals.compare import skipped_section, summary_table
from edgedistill.evals.plots import write_plots
from edgedistill.results import EvalResult


def relative(path: str | Path) -> str:
    """Paths in reports are relative to the working directory (the project root when run from it)."""
    return os.path.relpath(Path(path).resolve(), Path.cwd())


def precision_coverage_table(result: EvalResult) -> list[str]:
    """The confidence's precision/coverage curve on the eval questions, the app's threshold marked."""
    curve = result.figure("precision_coverage")
    if not curve:
        return []
    at = result.figure("likely_right_at")
    lines = ["", f"Confidence ({result.figure('confidence_signal', 'agreement')}) on these questions: answering only "
                 "at or above each threshold covers this share of them, this share of which is right (an answer "
                 "the vetoes rule out, its numbers not all in the question or not of its type, counts as below every "
                 "threshold).", "",
             "| threshold | coverage | precision |", "|---|---|---|"]
    above = [i for i, point in enumerate(curve) if at is not None and point["at"] >= at]
    for i, point in enumerate(curve):
        mark = f" (nearest above the app's \"likely right\", {at:.3f})" if above and i == above[-1] else ""
        lines.append(f"| {point['at']:.3f}{mark} | {point['coverage']:.1%} | {point['precision']:.1%} |")
    return lines


def write_report(run_root: Path, results: dict[str, EvalResult], seconds: dict, artifacts: dict, extra: dict
                 ) -> dict:
    """`results`: {name: the evaluation of base, student, gguf, onnx, ...}."""
    named = [dataclasses.replace(r, model=name, data=r.data or "eval") for name, r in results.items()]
    plots = write_plots(named, run_root / "eval")
    report = {name: r.to_dict(rows=False) for name, r in results.items()}
    report["seconds"] = seconds
    report["artifacts"] = {name: relative(p) for name, p in artifacts.items()}
    report["plots"] = {what: f"eval/{name}" for what, name in plots.items()}
    report.update(extra)
    write_json_atomic(run_root / "report.json", report)
    k = max([r.k for r in results.values()] + [1])
    lines = ["# edgedistill run report", ""] + summary_table(named, k) + skipped_section(named)
    if "base" in results and "student" in results:
        gain = results["student"].pass_at_1 - results["base"].pass_at_1
        lines += ["", f"The student is **{gain * 100:+.1f} points** of pass@1 above the base model."]
    if k > 1:
        lines += ["", f"pass@{k}, maj@{k}: {k} samples per question; ECE raw / calibrated: the app's confidence (the "
                      f"share of samples agreeing with the greedy answer) before and after calibration, cross-fitted "
                      f"on two halves of the questions. The base model is scored greedy only."]
    for name, r in results.items():
        if r.figure("likely_right_coverage") is not None:
            precision, at = r.figure("likely_right_precision"), r.figure("likely_right_at")
            lines += ["", f"**Selective answering ({name})**: the app marks {r.figure('likely_right_coverage'):.1%} "
                          f"of these questions \"likely right\" ({r.figure('likely_right_n')} of {r.n}), and "
                          + (f"{precision:.1%} of those are right." if precision is not None else "none of them.")
                          + f" The threshold (calibrated P >= {at}) was chosen on the dev split, "
                            "where the marked answers were at least 90% right; these questions played no part in it."
                          if at is not None else
                          f"**Selective answering ({name})**: no confidence level was 90% right on the dev split, so "
                          "the app calls no answer \"likely right\"."]
            lines += precision_coverage_table(r)
    lines += ["", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in seconds.items()]
    lines += ["", "Artifacts:"] + [f"- {name}: `{path}`" for name, path in report["artifacts"].items()]
    for key, value in extra.items():
        lines += ["", f"{key}: {value}"]
    if plots:
        lines += [""] + [f"![{what}](eval/{name})" for what, name in plots.items()]
    for name, r in results.items():
        lines += ["", f"## {name}: first answers", ""]
        for row in r.rows[:5]:
            mark = "right" if row.correct else "wrong"
            lines.append(f"- `{row.id}` ({mark}, reference {row.reference}): "
                         f"{row.text[:160].replace(chr(10), ' / ')}")
    write_text_atomic(run_root / "report.md", "\n".join(lines) + "\n")
    return report
