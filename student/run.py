"""The student stage: `student.stages` in order (default just sft), each starting from the model the one before it
merged; the last one's merged model is student/merged, what export and evaluation take.

    sft     teacher/sft/train.jsonl (answer_first) or teacher/sft/rationale_first.jsonl      student/sft.py
    dpo     teacher/preferences/train.jsonl, the previous model as policy start and reference  student/dpo.py
    online  GRAO or pass@k / maj@k / mean RL on the SFT questions, sampling the current model     student/online.py

A stage whose merged model is already written is skipped on a rerun, and a stage killed midway resumes from its
last checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from edgedistill.config import Config
from edgedistill.rundir import RunDir, StudentFiles, TeacherFiles
from edgedistill.student.dev import dev_evaluator


def run(config: Config, rundir: RunDir) -> dict:
    """The student stage's entry point: trains on <run>/teacher/ and writes <run>/student/ (StudentFiles)."""
    return run_student(config, rundir.teacher.root, rundir.student.root)


def run_student(config: Config, teacher: Path, out: Path) -> dict:
    from edgedistill.student.dpo import run_dpo
    from edgedistill.student.online import run_online
    from edgedistill.student.sft import run_sft
    stages = config.student.stages
    model, results = config.student.model, {}
    inputs, final = TeacherFiles(teacher), StudentFiles(out)
    for n, stage in enumerate(stages):
        stage_dir = out / stage
        merged = final.merged if n == len(stages) - 1 else StudentFiles(stage_dir).merged
        if (merged / "config.json").exists() and (stage_dir / "done.json").exists():
            results[stage] = {"skipped": "already trained", "merged": str(merged)}
        else:
            evaluate = dev_evaluator(config)
            if stage == "sft":
                results[stage] = run_sft(config, inputs.sft(config.student.format), stage_dir, model, merged,
                                         evaluate)
            elif stage == "dpo":
                results[stage] = run_dpo(config, inputs.preferences, stage_dir, model, merged, evaluate)
            else:
                results[stage] = run_online(config, inputs.sft_answer_first, stage_dir, model, merged,
                                            evaluate)
            (stage_dir / "done.json").write_text("{}\n")
        model = str(merged)
    last = results[stages[-1]]
    return {"stages": results, "merged": str(final.merged), "final_loss": last.get("final_loss"),
            "steps": last.get("steps"), "train_seconds": sum(r.get("train_seconds", 0) for r in results.values())}
