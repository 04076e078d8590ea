"""The run's eval stage (`edgedistill run`, after the export): every model of the run on the eval data, then the run
report.

    base      the untrained student model, few-shot (2 worked examples of data.train), greedy only: it is not served
    student   the merged student (transformers)
    gguf      the main GGUF of the export (llama.cpp)
    onnx      the ONNX export (onnxruntime-genai)

pass@1 for each; for what the app serves by default (the main GGUF, else the ONNX folder, else the merged student)
also k = eval.samples sampled answers: pass@k, maj@k, and the calibration of the app's confidence, fitted on the dev
split (data.dev, never the eval data) and written to eval/calibration-<name>.json (named in the manifest, where
`edgedistill serve` finds it for the run's model) with the "likely right" threshold at which dev answers were at least 90% right; the eval data then says how that threshold
does on questions it was not fitted on (likely_right_coverage, likely_right_precision). Each benchmark of `eval.also`
(a factory student's other tasks) adds rows: the served model and the base, greedy. Each result goes to eval/<name>.json through the stage's one result cache
(evals/evaluate.py), so a rerun with the same model files, questions and settings reuses it instead of decoding
again. report.json and report.md go to the run folder (evals/report.py).
"""
from __future__ import annotations

import dataclasses

import os
import time
from pathlib import Path

from edgedistill.calibration import Calibration, save_calibration
from edgedistill.confidence import selective, signals_of_rows
from edgedistill.config import Config
from edgedistill.datasets import load_benchmark, worked_examples
from edgedistill.formats import answer_first_target
from edgedistill.records import is_packaged, write_text_atomic
from edgedistill.rundir import RunDir
from edgedistill.runners import RUNNERS, calculator_note
from edgedistill.evals.compare import fitted_calibration
from edgedistill.evals.evaluate import Model, evaluate_cached, open_named_tables, with_schema
from edgedistill.evals.report import write_report
from edgedistill.results import EvalResult, ResultRow


def calibrate_on(rows: list[ResultRow], spec, data: str, cfg, questions, path: Path) -> Calibration:
    """The app's calibration fitted on the dev answers `rows` (of `questions`), with the "likely right" threshold
    dev supports, saved to `path` in the eval stage's folder (the app finds it through the run's manifest)."""
    agreements, corrects = [row.agreement for row in rows], [row.correct for row in rows]
    calibration = fitted_calibration(agreements, corrects, cfg, data, spec, signals_of_rows(rows, questions))
    save_calibration(calibration, path)
    print(f"[eval] calibration of {Path(str(spec)).name} fitted on {data} (n={len(corrects)}): {path}; likely right "
          f"from {calibration.likely_right_at} (dev coverage {calibration.extra['likely_right_coverage']:.0%}, "
          f"precision {calibration.extra['likely_right_precision']})",
          flush=True)
    return calibration


def write_runner_note(path: Path, gguf: str, measured: EvalResult, data: str) -> None:
    """What running the served GGUF without edgedistill's runtime costs (Ollama, llama.cpp's server: no
    calculator), measured, in the eval folder; the export's runner files point here."""
    notes = [calculator_note(runner, measured.pass_at_1, measured.pass_at_1_no_calculator, data)
             for runner in RUNNERS.values()]
    write_text_atomic(path, f"# Running {Path(gguf).name} without the calculator\n\n```\n" + "\n".join(notes)
                      + "```\n")


def judged_on_eval(calibration: Calibration, rows: list[ResultRow], questions) -> dict:
    """How the app's confidence, fitted on dev, does on the eval questions it never saw: what "likely right" covers
    and how often it is right there, and the precision/coverage curve of the probability it shows."""
    return {**selective(calibration, signals_of_rows(rows, questions), [row.correct for row in rows]),
            "likely_right_at": calibration.likely_right_at, "confidence_signal": calibration.signal}


def cache_name(data: str) -> str:
    """A benchmark's name as a file name: `fsiq:dev` -> `fsiq_dev`, a path -> its stem."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(data.replace(":", "_")).name)


def run(config: Config, rundir: RunDir) -> dict:
    """The eval stage: evaluate, calibrate, write the report; returns the stage's outputs ({"report": path})."""
    started = time.time()
    cfg = config.eval
    # a Benchmark: a question too long for the model is skipped and named by file:line, not by id alone
    tables = open_named_tables([*config.knowledge.tables, *config.knowledge.eval_tables])
    hints = (config.knowledge.value_hints, config.knowledge.name_hints)
    questions = with_schema(load_benchmark(config.data.eval, limit=config.data.eval_limit, columns=config.data.columns),
                            tables, *hints)

    def score(name: str, spec, backend: str, label: str, shots=(), k: int = cfg.samples, on=None,
              data: str = config.data.eval, settings=cfg) -> EvalResult:
        model = Model(spec, backend=backend, allow_network=config.allow_network, threads=cfg.threads)
        return evaluate_cached(model, questions if on is None else on, cache=rundir.eval_dir / f"{name}.json",
                               settings=settings, k=k, shots=shots, seed=config.seed, label=label,
                               fields={"data": data}, tables=tables)

    # The served GGUF's runner files say what it scores without the calculator (Ollama, llama.cpp's server): one
    # more greedy pass, where the questions have numbers to compute.
    runner_settings = dataclasses.replace(cfg, calculator_row=True) \
        if any(q.answer_type == "number" for q in questions) else cfg

    results = {}
    if cfg.base:
        # worked examples of the eval's own task (a packaged split's train part), else of the first train source
        examples = worked_examples(config.data.eval, 2) if is_packaged(config.data.eval) else \
            load_benchmark(config.data.sources()[0].source, limit=2)
        shots = [(q, answer_first_target(q)) for q in examples]
        results["base"] = score("base", config.student.model, "transformers", "eval base", shots, k=1)
    merged = rundir.student.merged
    artifacts = {"student": merged}
    export = rundir.stage("export").get("outputs", {})
    gguf, onnx = export.get("gguf"), (export.get("onnx") or {}).get("path")
    # k samples (pass@k, maj@k, the app's calibration) for what the app serves by default: the main GGUF, else the
    # ONNX folder, else the merged student; the others greedy only. Sampling the ONNX too (one row at a time) took
    # 7 more minutes in the quickstart; `edgedistill eval --model <onnx> --calibrate` does it when wanted.
    served = {"gguf"} if gguf else {"onnx"} if onnx else {"student"}
    calibrated: dict[str, Path] = {}          # model spec: its calibration, for the manifest (where the app looks)
    scored: dict[str, tuple[str, str]] = {}   # name: (model spec, backend), for the eval.also rows below
    for name, spec, backend, label in (("student", str(merged), "transformers", "eval student"),
                                       ("gguf", gguf, "llama.cpp", f"eval gguf {export.get('quant', config.export.quant)}"),
                                       ("onnx", onnx, "onnx", "eval onnx")):
        if spec:
            results[name] = score(name, spec, backend, label, k=cfg.samples if name in served else 1,
                                  settings=runner_settings if name == "gguf" else cfg)
            artifacts[name], scored[name] = Path(spec), (spec, backend)
            if name in served and cfg.calibrate and cfg.samples > 1:
                # the app's confidence is calibrated on dev, then judged on the eval data it was not fitted on
                fit_rows, fit_questions = [], []
                for data in [config.data.dev, *cfg.calibration_data]:     # dev, and the sets pooled with it
                    on = with_schema(load_benchmark(data, limit=cfg.calibration_questions), tables, *hints)
                    cached = f"{name}-dev" if data == config.data.dev else f"{name}-calibration-{cache_name(data)}"
                    fit_rows += score(cached, spec, backend, f"{label} {data}", on=on, data=data).rows
                    fit_questions += on
                calibrated[spec] = rundir.eval_dir / f"calibration-{name}.json"
                calibration = calibrate_on(fit_rows, spec, " + ".join([config.data.dev,
                                                                                   *cfg.calibration_data]),
                                           cfg, fit_questions, calibrated[spec])
                results[name].figures.update(judged_on_eval(calibration, results[name].rows, questions))
    # the other tasks, each on its own questions: what the app serves, and the base before it
    also_models = ([("base", config.student.model, "transformers")] if cfg.base else []) + \
        [(name, *scored[name]) for name in sorted(served & set(scored))]
    for data in cfg.also:
        on, task_shots = with_schema(load_benchmark(data), tables, *hints), \
            [(q, answer_first_target(q)) for q in worked_examples(data, 2)]
        for name, spec, backend in also_models:
            results[f"{name} {data}"] = score(f"{name}-{cache_name(data)}", spec, backend, f"eval {name} {data}",
                                               task_shots if name == "base" else (), k=1, on=on, data=data)
    if gguf and "gguf" in results:    # what running the GGUF without us costs, measured: eval/runners.md
        write_runner_note(rundir.eval_dir / "runners.md", gguf, results["gguf"], config.data.eval)
    seconds = {stage: rundir.stage(stage).get("seconds") for stage in ("teach", "train", "export")}
    # the stage's wall time, the calibration's own questions included (a rerun that reuses every result: seconds)
    seconds["eval"] = round(time.time() - started, 1)
    extra = {"eval_data": config.data.eval, "teacher": config.teacher.kind}
    if calibrated:
        fitted_on = " + ".join([config.data.dev, *cfg.calibration_data])
        extra["calibration"] = ", ".join(f"{os.path.relpath(path)} (fitted on {fitted_on})"
                                         for path in calibrated.values())
    if gguf:
        tables = " --tables " + " ".join(config.knowledge.tables) if config.knowledge.tables else ""
        extra["serve"] = f"edgedistill serve --model {os.path.relpath(gguf)}{tables}"
        if export.get("served"):      # which GGUF serves, by the export's measured bar
            extra["served_file"] = export["served"]["reason"]
    write_report(rundir.root, results, seconds, artifacts, extra)
    for name, r in results.items():
        print(f"[eval] {name}: pass@1 {r.pass_at_1:.1%} (95% CI {r.ci95[0]:.1%}-{r.ci95[1]:.1%}, n={r.n})")
    outputs = {"report": str(rundir.report_json)}
    if calibrated:
        outputs["calibration"] = {str(spec): str(path) for spec, path in calibrated.items()}
    return outputs
