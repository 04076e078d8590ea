"""`edgedistill run`: teacher -> student -> export -> eval -> report; a stage is skipped when its fingerprint is unchanged.

Stages meet only through files in the run directory; this module passes paths, never objects. Each stage module
is imported when its step runs, so `edgedistill eval` does not import the trainer and vice versa.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edgedistill.config import Config
from edgedistill.records import data_path, load_questions, write_json_atomic
from edgedistill.rundir import RunDir, file_sha256, fingerprint

STAGES = ("teach", "train", "export", "eval")
STAGE_DIRS = {"teach": "teacher", "train": "student", "export": "export", "eval": "eval"}


def preflight(config: Config, out: str | Path) -> RunDir:
    """What can be checked before any model loads: the run folder is writable and every data file the config
    names reads as questions (a malformed line fails here, in seconds, not after an hour of teaching)."""
    run = RunDir(out)
    load_questions(config.data.train, need_answers=config.teacher.kind == "dataset", limit=config.data.train_limit)
    load_questions(config.data.eval, limit=config.data.eval_limit)
    load_questions(config.data.dev, limit=config.student.dev_limit)
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
            shutil.rmtree(run.path(STAGE_DIRS[stage]), ignore_errors=True)
        print(f"[{stage}] running", flush=True)
        started = run.start(stage, keys[stage])
        try:
            outputs = STEP[stage](config, run)
        except BaseException as exc:
            run.fail(stage, started, f"{type(exc).__name__}: {exc}")
            raise
        run.finish(stage, started, outputs)
    return json.loads(run.path("report.json").read_text()) if run.path("report.json").exists() else {}


def stage_key(stage: str, config: Config, run: RunDir, keys: dict) -> str:
    """What a stage's output depends on: its config section and the hash of its input files."""
    if stage == "teach":   # evaluation files count: selection keeps their items out of the training data
        files = [config.data.train, config.data.eval, *config.teacher.select.decontaminate]
        return fingerprint(config.seed, config.section("teacher"), config.data.train_limit, config.allow_network,
                           [(f, file_sha256(data_path(f))) for f in files])
    if stage == "train":
        inputs = [run.path("teacher", "sft", name) for name in ("train.jsonl", "rationale_first.jsonl")] + \
            [run.path("teacher", "preferences", "train.jsonl")]
        dev = [(config.data.dev, file_sha256(data_path(config.data.dev)))] if config.student.eval_every else []
        return fingerprint(config.seed, config.section("student"), dev,
                           [file_sha256(f) if f.exists() else None for f in inputs])
    if stage == "export":
        return fingerprint(config.section("export"), keys["train"])
    return fingerprint(config.section("eval"), config.data.eval, config.data.eval_limit, keys["train"],
                       keys["export"], config.student.model)


def step_teach(config: Config, run: RunDir) -> dict:
    from edgedistill.teacher.distill import run_teacher
    summary = run_teacher(config, run.path("teacher"))
    print(f"[teach] {summary}", flush=True)
    if summary["kept"] == 0:
        from edgedistill import UserError
        if summary["verified"] == 0:
            raise UserError("the teacher verified no sample: nothing to train on (see teacher/samples.jsonl verdicts)")
        dropped = json.loads(run.path("teacher", "selection.json").read_text())["dropped"]
        why = ", ".join(f"{n} {reason}" for reason, n in dropped.items() if n)
        raise UserError(f"the teacher verified {summary['verified']} samples but selection kept none ({why}; see "
                        f"teacher/selection.json). Contaminated means the question shares a "
                        f"{config.teacher.select.ngram}-word run with an evaluation item: is data.eval the training "
                        f"file? Set teacher.select.decontaminate_eval: false only to evaluate on training questions")
    return summary


def step_train(config: Config, run: RunDir) -> dict:
    from edgedistill.student.run import run_student
    return run_student(config, run.path("teacher"), run.path("student"))


def step_export(config: Config, run: RunDir) -> dict:
    if not config.export.gguf and config.export.onnx == "none":
        return {"gguf": None}
    from edgedistill.export.gguf import read_calibration
    from edgedistill.export.run import run_export
    calibration = None
    if config.export.calibration:   # the student's own training conversations: what its answers look like
        calibration = read_calibration(run.path("teacher", "sft", "train.jsonl"), config.export.calibration)
    questions = load_questions(config.data.eval, limit=config.data.eval_limit) if config.export.parity else []
    result = run_export(config.export, run.path("student", "merged"), run.path("export"), calibration, questions)
    if result.get("gguf"):
        print(f"[export] {result['gguf']} ({result['files'][config.export.quant]['bytes'] / 2**20:.1f} MiB), "
              f"convert {result['convert_seconds']} s, quantize {result['quantize_seconds']} s", flush=True)
    return {"gguf": None, **result}


def step_eval(config: Config, run: RunDir) -> dict:
    """The base model (few-shot, greedy only: it is not served), the merged student and its exports on the eval
    data: pass@1, and for what the app serves (the main GGUF, else the ONNX, else the student), k = eval.samples
    sampled answers: pass@k, maj@k and the calibration of the app's confidence, written beside it (where
    `edgedistill serve` reads it)."""
    from edgedistill.formats import answer_first_target
    from edgedistill.generate import load_generator
    from edgedistill.evals.compare import write_calibrations
    from edgedistill.evals.datasets import located
    from edgedistill.evals.evaluate import evaluate_benchmark
    from edgedistill.evals.report import write_report
    # located: a question too long for the model is skipped and named by file:line, not by id alone
    questions = located(data_path(config.data.eval), load_questions(config.data.eval, limit=config.data.eval_limit))
    cfg = config.eval

    def score(model: str, backend: str, label: str, shots=(), k: int = cfg.samples) -> dict:
        generator = load_generator(model, config.allow_network, backend)
        result = evaluate_benchmark(generator, questions, shots, k, cfg.temperature, cfg.max_new_tokens,
                                    cfg.batch_size, calculator_row=False, end_subset=0, seed=config.seed, label=label)
        result.update(model_spec=str(model), data=config.data.eval, backend=generator.backend)
        return result

    results = {}
    if cfg.base:
        shots = [(q, answer_first_target(q)) for q in load_questions(config.data.train, limit=2)]
        key = fingerprint(config.section("eval"), config.data.eval, config.data.eval_limit, config.student.model,
                          config.data.train)
        results["base"] = _cached_eval(run.path("eval", "base.json"), key,
                                       lambda: score(config.student.model, "transformers", "eval base", shots, k=1))
    merged = run.path("student", "merged")
    artifacts = {"student": merged}
    export = run.stage("export").get("outputs", {})
    gguf, onnx = export.get("gguf"), (export.get("onnx") or {}).get("path")
    # k samples (pass@k, maj@k, the app's calibration) for what the app serves by default: the main GGUF, else the
    # ONNX folder, else the merged student; the others greedy only. Sampling the ONNX too (one row at a time) took
    # 7 more minutes in the quickstart; `edgedistill eval --model <onnx> --calibrate` does it when wanted.
    served = {"gguf"} if gguf else {"onnx"} if onnx else {"student"}
    for name, model, backend, label in (("student", str(merged), "transformers", "eval student"),
                                        ("gguf", gguf, "llama.cpp", f"eval gguf {config.export.quant}"),
                                        ("onnx", onnx, "onnx", "eval onnx")):
        if model:
            results[name] = score(model, backend, label, k=cfg.samples if name in served else 1)
            write_json_atomic(run.path("eval", f"{name}.json"), results[name])
            artifacts[name] = Path(model)
    seconds = {stage: run.stage(stage).get("seconds") for stage in ("teach", "train", "export")}
    seconds["eval"] = round(sum(r["seconds"] for r in results.values()), 1)
    extra = {"eval_data": config.data.eval, "teacher": config.teacher.kind}
    if cfg.calibrate and cfg.samples > 1:
        from edgedistill.evals.compare import EvalSettings
        written = write_calibrations([dict(r, model=name) for name, r in results.items() if name in served],
                                     EvalSettings(k=cfg.samples, temperature=cfg.temperature))
        extra["calibration"] = ", ".join(os.path.relpath(path) for path in written.values()
                                         if not path.startswith("skipped"))
    if gguf:
        extra["serve"] = f"edgedistill serve --model {os.path.relpath(gguf)}"
    report = write_report(run.root, results, seconds, artifacts, extra)
    for name, r in results.items():
        print(f"[eval] {name}: pass@1 {r['pass@1']:.1%} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%}, n={r['n']})")
    return {"report": str(run.path("report.json"))}


def _cached_eval(path: Path, key: str, compute) -> dict:
    """An evaluation that does not depend on training (the base model) is reused while its inputs are unchanged."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == key:
            return cached
    result = compute()
    result["fingerprint"] = key
    write_json_atomic(path, result)
    return result


STEP = {"teach": step_teach, "train": step_train, "export": step_export, "eval": step_eval}
