"""The run report: report.json (machine-readable) and report.md (for people), side by side in the run directory."""
from __future__ import annotations

import os
from pathlib import Path

from edgedistill.records import write_json_atomic, write_text_atomic


def relative(path: str | Path) -> str:
    """Paths in reports are relative to the working directory (the project root when run from it)."""
    return os.path.relpath(Path(path).resolve(), Path.cwd())


def write_report(run_root: Path, results: dict, seconds: dict, artifacts: dict, extra: dict) -> dict:
    report = {name: {k: v for k, v in r.items() if k != "rows"} for name, r in results.items()}
    report["seconds"] = seconds
    report["artifacts"] = {name: relative(p) for name, p in artifacts.items()}
    report.update(extra)
    write_json_atomic(run_root / "report.json", report)
    lines = ["# edgedistill run report", "",
             "| model | pass@1 | 95% interval | n | s/question |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lo, hi = r["ci95"]
        lines.append(f"| {name} | {r['pass@1']:.1%} | {lo:.1%} - {hi:.1%} | {r['n']} | {r['seconds_per_question']} |")
    if "base" in results and "student" in results:
        gain = results["student"]["pass@1"] - results["base"]["pass@1"]
        lines += ["", f"The student is **{gain * 100:+.1f} points** of pass@1 above the base model."]
    lines += ["", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in seconds.items()]
    lines += ["", "Artifacts:"] + [f"- {name}: `{path}`" for name, path in report["artifacts"].items()]
    for key, value in extra.items():
        lines += ["", f"{key}: {value}"]
    for name, r in results.items():
        lines += ["", f"## {name}: first answers", ""]
        for row in r["rows"][:5]:
            mark = "right" if row["correct"] else "wrong"
            lines.append(f"- `{row['id']}` ({mark}, reference {row['reference']}): "
                         f"{row['text'][:160].replace(chr(10), ' / ')}")
    write_text_atomic(run_root / "report.md", "\n".join(lines) + "\n")
    return report
