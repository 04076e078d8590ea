"""`edgedistill run`: teacher -> student -> export -> eval -> report; a stage is skipped when its fingerprint is unchanged.

Stages meet only through files in the run directory; this module passes paths, never objects. Each stage module
is imported when its step runs, so `edgedistill eval` does not import the trainer and vice versa.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from edgedistill.config import Config
from edgedistill.datasets import load_benchmark
from edgedistill.records import data_path, load_questions, load_sources
from edgedistill.rundir import RunDir, file_sha256, fingerprint

STAGES = ("teach", "train", "export", "eval")


def preflight(config: Config, out: str | Path) -> RunDir:
    """What can be checked before any model loads: the run folder is writable and every data file the config
    names reads as questions (a malformed line fails here, in seconds, not after an hour of teaching)."""
    run = RunDir(out)
    load_sources(config.data.sources(), need_answers=config.teacher.kind == "dataset", columns=config.data.columns)
    # the eval and dev files read as the eval stage reads them (one loader: GSM8K, SVAMP, a slice `FILE[a:b]`, ...)
    load_benchmark(config.data.eval, limit=config.data.eval_limit, columns=config.data.columns)
    load_benchmark(config.data.dev, limit=config.student.dev_limit, columns=config.data.columns)
    for path in config.teacher.select.decontaminate:
        load_questions(path, need_answers=False)
    return run


def run_pipeline(config: Config, out: str | Path, only: str | None = None) -> dict:
    run = preflight(config, out)
    run.write_config(config.to_dict())
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage] = stage_key(stage, config, run, keys)
        if only and stage != only:
            continue
        if run.is_done(stage, keys[stage]):
            print(f"[{stage}] unchanged since the last run: skipped", flush=True)
            continue
        if run.stage(stage).get("fingerprint") not in (None, keys[stage]):
            # config or inputs changed: partial work (samples, checkpoints) belongs to the old run, not this one
            print(f"[{stage}] config or inputs changed: starting this stage afresh", flush=True)
            clear_stage(run, stage)
        print(f"[{stage}] running", flush=True)
        started = run.start(stage, keys[stage])
        try:
            outputs = stage_run(stage)(config, run)
        except BaseException as exc:
            run.fail(stage, started, f"{type(exc).__name__}: {exc}")
            raise
        run.finish(stage, started, outputs)
    return json.loads(run.report_json.read_text()) if run.report_json.exists() else {}


def clear_stage(run: RunDir, stage: str) -> None:
    """The old run's folder of a stage out of the way. A teacher's logs are hours of generation on a CPU (and a
    changed config is often a mistake), so they are kept aside as `teacher.before-<time>`, whose logs a run resumes
    from when copied back; the other stages are rebuilt in minutes from what the teacher wrote."""
    folder = run.stage_folder(stage)
    if stage == "teach" and folder.is_dir() and any(folder.iterdir()):
        aside = folder.with_name(f"{folder.name}.before-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
        print(f"[{stage}] the previous teacher output is kept in {aside} (copy its logs back to resume from them)",
              flush=True)
        return
    shutil.rmtree(folder, ignore_errors=True)


def stage_key(stage: str, config: Config, run: RunDir, keys: dict) -> str:
    """What a stage's output depends on: the fields of its config section that differ from their defaults, and the
    hash of its input files. Only changed fields count, so a field added with a default leaves earlier keys as
    they were (docs/run.md: runs made before 2026-12-06 retrain once)."""
    if stage == "teach":   # evaluation files count: selection keeps their items out of the training data
        from edgedistill.config import non_default
        sources = [(non_default(s), file_sha256(data_path(s.source))) for s in config.data.sources()]
        files = [config.data.eval, *config.teacher.select.decontaminate]
        tables = [config.changed("knowledge")] if config.knowledge.tables else []   # earlier runs keep their keys
        return fingerprint(config.seed, config.changed("teacher"), config.allow_network, sources,
                           [(f, file_sha256(data_path(f))) for f in files], *tables)
    if stage == "train":
        teacher = run.teacher
        inputs = [teacher.sft_answer_first, teacher.sft_rationale_first, teacher.preferences]
        dev = [(config.data.dev, file_sha256(data_path(config.data.dev)))] if config.student.eval_every else []
        return fingerprint(config.seed, config.changed("student"), dev,
                           [file_sha256(f) if f.exists() else None for f in inputs])
    if stage == "export":
        return fingerprint(config.changed("export"), keys["train"])
    tables = [config.changed("knowledge")] if config.knowledge.tables or config.knowledge.eval_tables else []
    return fingerprint(config.changed("eval"), config.data.eval, config.data.eval_limit, keys["train"],
                       keys["export"], config.student.model, *tables)


def stage_run(stage: str):
    """Each stage's one entry point, `run(config, rundir)`, imported only when that stage runs."""
    if stage == "teach":
        from edgedistill.teacher.run import run
    elif stage == "train":
        from edgedistill.student.run import run
    elif stage == "export":
        from edgedistill.export.run import run
    else:
        from edgedistill.evals.run import run
    return run
