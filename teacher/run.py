"""The teacher stage's entry point: `run(config, rundir)` writes <run>/teacher/ (TeacherFiles) and says plainly why
when nothing is left to train on."""
from __future__ import annotations

import json

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.rundir import RunDir
from edgedistill.teacher.distill import run_teacher


def run(config: Config, rundir: RunDir) -> dict:
    summary = run_teacher(config, rundir.teacher.root)
    print(f"[teach] {summary}", flush=True)
    if summary["kept"] == 0:
        raise UserError(nothing_kept(summary, rundir, config.teacher.select.ngram))
    return summary


def nothing_kept(summary: dict, rundir: RunDir, ngram: int) -> str:
    if summary["verified"] == 0:
        return "the teacher verified no sample: nothing to train on (see teacher/samples.jsonl verdicts)"
    dropped = json.loads(rundir.teacher.selection.read_text())["dropped"]
    why = ", ".join(f"{n} {reason}" for reason, n in dropped.items() if n)
    return (f"the teacher verified {summary['verified']} samples but selection kept none ({why}; see "
            f"teacher/selection.json). Contaminated means the question shares a {ngram}-word run with an evaluation "
            f"item: is data.eval the training file? Set teacher.select.decontaminate_eval: false only to evaluate on "
            f"training questions")
