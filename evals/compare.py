"""`edgedistill eval --model A --model B --data X --data Y --out DIR`: every model on every benchmark, one report.

    DIR/report.md          tables per benchmark (macro-F1 on label sets, McNemar against the first model), the
                           cross-check, the plots
    DIR/report.json        the same figures, machine-readable (no per-question rows)
    DIR/*.png              accuracy per model and per topic, reliability diagram, speed against accuracy
    DIR/results/*.json     one (model, benchmark) each, with its per-question rows; reused by a rerun with the same
                           model files, questions and settings (the stage's one result cache, evals/evaluate.py), so
                           an interrupted comparison resumes where it stopped

Each model is loaded once (and not at all when every result of it is reused) and runs every benchmark. The settings
are the eval stage's (`EvalConfig`); with `calibrate`, each model's confidence calibration (all its benchmarks
pooled) is written where the app looks for it (`calibration_path_for`).
"""
from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from edgedistill.calibration import Calibration, calibration_path_for, fit_calibration, \
    likely_right_threshold, save_calibration
from edgedistill.config import EvalConfig
from edgedistill.label_metrics import mcnemar
from edgedistill.metrics import calibration_metrics
from edgedistill.records import write_json_atomic, write_text_atomic
from edgedistill.evals.evaluate import Model, evaluate_cached, open_named_tables, with_schema
from edgedistill.evals.plots import write_plots
from edgedistill.results import PASS_AT_1, PASS_AT_1_AT_DELIMITER, PASS_AT_1_FULL_TEXT, EvalResult


def model_label(spec: str) -> str:
    """A short name for a model: a file's name, or parent/name for a folder called merged, onnx, ..."""
    path = Path(spec)
    if not path.exists():
        return spec
    return path.name if path.is_file() or path.name not in ("merged", "onnx", "final") else f"{path.parent.name}/{path.name}"


def model_labels(specs: list[str]) -> list[str]:
    """A label per model, told apart: two students both called `student-Q4_K_M.gguf` (two runs' exports) are named
    by their run folders, `factory/export/student-Q4_K_M.gguf` and `quickstart/export/...`, so their rows, cached
    results and paired test are not mixed up."""
    labels = [model_label(spec) for spec in specs]
    for depth in range(1, 6):
        repeated = {label for label in labels if labels.count(label) > 1}
        if not repeated:
            break
        labels = ["/".join(Path(spec).parts[-(depth + 1):]) if label in repeated else label
                  for spec, label in zip(specs, labels)]
    return labels


def data_label(spec: str, *, skip: int = 0, limit: int | None = None) -> str:
    from edgedistill.datasets import split_slice
    file, part = split_slice(spec)
    path = Path(file)
    name = (f"{path.parent.name}/{path.name}" if path.exists() else file) + (spec[len(file):] if part else "")
    if skip or limit:
        name += f"[{skip}:{skip + limit if limit else ''}]"
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")[:80]


def compare(models: list[str], datasets: list[str], out: str | Path, settings: EvalConfig, *,
            shots: list[int] | None = None, limit: int | None = None, skip: int = 0, fmt: str | None = None,
            seed: int = 0, allow_network: bool = False, tables: list[str] = (), value_hints: bool = False,
            name_hints: bool = False) -> dict:
    """Evaluate every model on every benchmark and write the report; returns report.json's content. `shots`: worked
    examples per model (default none); `limit`, `skip`, `fmt`: which questions of each benchmark, read how
    (edgedistill.datasets.load_benchmark); with `settings.calibrate`, each model's calibration is written where
    the app reads it; `tables`: the plant's tables the models' queries run on."""
    from edgedistill.datasets import load_benchmark, worked_examples
    from edgedistill.formats import answer_first_target
    out = Path(out)
    shots = shots or [0] * len(models)
    tool = open_named_tables(list(tables))
    benchmarks = {spec: with_schema(load_benchmark(spec, fmt=fmt, limit=limit, skip=skip), tool, value_hints, name_hints)
                  for spec in datasets}
    results = []
    for spec, n_shots, model_name in zip(models, shots, model_labels(list(models))):
        # on cores another job uses, one llama.cpp thread is about 4x faster than two that wait for each other at
        # every layer (settings.threads)
        model = Model(spec, allow_network=allow_network, threads=settings.threads)
        for data, questions in benchmarks.items():
            name = data_label(data, skip=skip, limit=limit)
            label = f"{model_name} / {name}"
            examples = [(q, answer_first_target(q)) for q in worked_examples(data, n_shots)]   # the task's own
            cache = out / "results" / f"{_slug(model_name)}__{_slug(name)}.json"
            result = evaluate_cached(model, questions, cache=cache, settings=settings, shots=examples, seed=seed,
                                     label=label, crosscheck=True, announce=True, tables=tool,
                                     fields={"model": model_name, "data": name, "data_spec": data})
            results.append(result)
        del model
    selection = {"seed": seed, "limit": limit, "skip": skip, "format": fmt}
    report = write_comparison(out, results, settings, selection)
    if settings.calibrate:
        report["calibration"] = write_calibrations(results, settings, benchmarks)
        write_json_atomic(out / "report.json", report)
    return report


def fitted_calibration(agreements: list[int], corrects: list[bool], settings: EvalConfig, data: str,
                       spec, signals: list | None = None) -> Calibration:
    """The app's calibration fitted on these answers, with the "likely right" threshold they support and the fit's
    ECE/Brier, raw and cross-fitted, in `extra`. With each answer's `signals` (edgedistill.confidence) and
    `settings.confidence == "combined"`, the probability is their fitted combination and the threshold is chosen
    where the lower bound of the fitting answers' precision holds 90%; else the agreement table
    (calibration.likely_right_threshold)."""
    k = settings.samples
    calibration = fit_calibration(agreements, corrects, k, settings.temperature, data, str(spec))
    measured = calibration_metrics(agreements, corrects, k, settings.temperature)
    calibration.extra = {"ece_raw": measured["ece_raw"], "brier_raw": measured["brier_raw"],
                         "ece_cross_fitted": measured["ece"], "brier_cross_fitted": measured["brier"]}
    if signals is not None and settings.confidence == "combined":
        from edgedistill.calibration import brier_score, expected_calibration_error
        from edgedistill.confidence import cross_fitted, fit_combined, threshold_for, vetoed
        combined = fit_combined(signals, corrects)
        calibration.combined = combined.to_dict()
        calibration.signal = "a fitted combination of " + ", ".join(combined.signals)
        honest = cross_fitted(signals, corrects)      # for the calibration error: no answer judged by its own fit
        # the threshold on the probabilities the app will show (the fit's own scale: cross-fitted ones run higher
        # or lower than it); what guards it against the fit's optimism is the lower bound threshold_for demands
        threshold = threshold_for([combined.probability(s) for s in signals], corrects,
                                  vetoes=[vetoed(s) for s in signals])
        calibration.extra.update({"ece_combined_cross_fitted": round(expected_calibration_error(honest, corrects), 4),
                                  "brier_combined_cross_fitted": round(brier_score(honest, corrects), 4)})
    else:
        threshold = likely_right_threshold(calibration, agreements, corrects)
    calibration.likely_right_at = threshold["at"]
    calibration.extra.update({"likely_right_coverage": threshold["coverage"],
                              "likely_right_precision": threshold["precision"]})
    return calibration


def write_calibrations(results: list[EvalResult], settings: EvalConfig, benchmarks: dict) -> dict:
    """Per model, the confidence calibration over all its benchmarks (`benchmarks`: {data spec: its questions}),
    beside the model (where the app reads it). A packaged name or hub id has no place of its own: it is skipped,
    and the report says so."""
    from edgedistill.confidence import signals_of_rows
    written = {}
    k = settings.samples
    for spec in dict.fromkeys(r.model_spec for r in results):
        mine = [r for r in results if r.model_spec == spec]
        rows = [row for r in mine for row in r.rows if row.agreement is not None]
        if not rows or k < 2:
            continue
        agreements, corrects = [row.agreement for row in rows], [row.correct for row in rows]
        signals = [s for r in mine for s in signals_of_rows([row for row in r.rows if row.agreement is not None],
                                                            benchmarks[r.data_spec])]
        data = ", ".join(r.data for r in mine)
        calibration = fitted_calibration(agreements, corrects, settings, data, spec, signals)
        if not Path(spec).exists():
            written[spec] = "skipped: not a file or folder (a packaged name or hub id)"
            continue
        path = calibration_path_for(spec)
        save_calibration(calibration, path)
        written[spec] = str(path)
        print(f"[eval] calibration of {model_label(spec)}: {path}", flush=True)
    return written


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def summary_table(results: list[EvalResult], k: int = 4) -> list[str]:
    """The main table, one row per result: the comparison report and the pipeline's run report both print it. The
    pass@k and maj@k columns only where something was sampled (k > 1)."""
    sampled = k > 1
    head = ["model", "backend", "n", PASS_AT_1, "95% interval"] + ([f"pass@{k}", f"maj@{k}"] if sampled else []) + \
        ["pass@1 no calculator", "ECE raw / calibrated", "Brier calibrated", "tokens to answer",
         "s/question to answer", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lo, hi = r.ci95
        ece = f"{r.figure('ece_raw'):.3f} / {r.figure('ece'):.3f}" if r.figure("ece") is not None else "-"
        brier = f"{r.figure('brier'):.3f}" if r.figure("brier") is not None else "-"
        n = f"{r.n} ({r.skipped} skipped)" if r.skipped else r.n
        per_question = r.seconds_to_answer if r.seconds_to_answer is not None else r.seconds_per_question
        cells = [r.model, r.backend or "-", n, f"**{r.pass_at_1:.1%}**", f"{lo:.1%} - {hi:.1%}"]
        if sampled:
            cells += [_pct(r.pass_at_k if r.k == k else None), _pct(r.maj_at_k if r.k == k else None)]
        cells += [_pct(r.pass_at_1_no_calculator), ece, brier, r.tokens_to_answer or "-", per_question, r.seconds]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def table_section(intro: str, header: list[str], rows: list[list]) -> list[str]:
    """A report section: a blank line, one line saying what the table shows, then the Markdown table."""
    return ["", intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def label_table(results: list[EvalResult]) -> list[str]:
    """Accuracy (= micro-F1) and macro-F1 of the results on a closed label set (none for numeric questions)."""
    rows = [r for r in results if r.figure("macro_f1") is not None]
    if not rows:
        return []
    return table_section("One label per question, so accuracy is micro-F1; macro-F1 weighs every reference label "
                         "the same (95% bootstrap interval).", ["model", "accuracy", "macro-F1", "95% interval"],
                         [[r.model, f"{r.figure('accuracy'):.1%}", f"{r.figure('macro_f1'):.3f}",
                           f"{r.figure('macro_f1_ci95')[0]:.3f} - {r.figure('macro_f1_ci95')[1]:.3f}"] for r in rows])


def text_table(results: list[EvalResult]) -> list[str]:
    """Free-text answers scored two ways, side by side: normalised exact match and token F1."""
    rows = [r for r in results if r.figure("text_token_f1") is not None]
    if not rows:
        return []
    return table_section("Free-text answers: exact match after normalising (case, punctuation, spacing), and token "
                         "F1 (SQuAD-style word overlap, articles dropped) for partial credit.",
                         ["model", "exact match", "token F1"],
                         [[r.model, f"{r.figure('text_exact_match'):.1%}", f"{r.figure('text_token_f1'):.3f}"]
                          for r in rows])


def paired_tests(results: list[EvalResult]) -> list[dict]:
    """McNemar's exact test of every model against the first, on the questions both were scored on."""
    if len(results) < 2 or not results[0].rows:
        return []
    first = {row.id: bool(row.correct) for row in results[0].rows}
    return [{"first": results[0].model, "second": r.model,
             **mcnemar(first, {row.id: bool(row.correct) for row in r.rows})}
            for r in results[1:] if r.rows]


def paired_table(results: list[EvalResult]) -> list[str]:
    tests = paired_tests(results)
    if not tests:
        return []
    return table_section("Paired (McNemar, exact): of the questions both scored, those only one of the two got "
                         "right; p below 0.05 means the difference is unlikely to be chance.",
                         ["model", "against", "questions", "right only here", "right only there", "p"],
                         [[t["second"], t["first"], t["n"], t["only_second"], t["only_first"], f"{t['p_value']:.3g}"]
                          for t in tests])


def skipped_section(results: list[EvalResult], shown: int = 20) -> list[str]:
    """The questions left out of each result because their prompt did not fit the model's context, by file and
    line: n counts only the questions scored, so a reader sees what is missing from it."""
    lines = []
    for r in results:
        records = r.skipped_questions
        if records:
            label = f"{r.model} on {r.data}" if r.data else r.model
            lines += ["", f"{label}: {len(records)} questions skipped, their prompt too long for the model's "
                          f"context (not counted in n):", ""]
            lines += [f"- `{s['where']}` (id {s['id']}): {s['prompt_tokens']} prompt tokens" for s in records[:shown]]
            if len(records) > shown:
                lines.append(f"- ... and {len(records) - shown} more (report.json lists them)")
    return lines


def end_table(results: list[EvalResult]) -> list[str]:
    rows = [r for r in results if r.to_the_end]
    if not rows:
        return []
    e = rows[0].to_the_end
    lines = ["", f"To the end: the first {e['n']} questions decoded past the Answer line (greedy, calculator on, at "
             f"most {e['max_new_tokens']} new tokens), to measure the rationale's cost; the app stops at the "
             f"delimiter.", "",
             "| model | pass@1 at the delimiter | pass@1 from the full text | tokens to answer | tokens to end | "
             "s/question to end |", "|---|---|---|---|---|---|"]
    for r in rows:
        e = r.to_the_end
        lines.append(f"| {r.model} | {_pct(e[PASS_AT_1_AT_DELIMITER])} | {_pct(e[PASS_AT_1_FULL_TEXT])} | "
                     f"{e['tokens_to_answer'] or '-'} | {e['tokens_to_end'] or '-'} | {e['seconds_to_end']} |")
    return lines


def topic_table(results: list[EvalResult]) -> list[str]:
    topics = sorted({t for r in results for t in r.topics})
    if not topics:
        return []
    lines = ["", "pass@1 per topic (n):", "", "| topic | " + " | ".join(r.model for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for topic in topics:
        cells = [f"{r.topics[topic][PASS_AT_1]:.1%} ({r.topics[topic]['n']})" if topic in r.topics else "-"
                 for r in results]
        lines.append(f"| {topic} | " + " | ".join(cells) + " |")
    return lines


def crosscheck_section(results: list[EvalResult], shown: int = 15) -> list[str]:
    checked = [r for r in results if (r.crosscheck or {}).get("n")]
    if not checked:
        return []
    lines = ["", "## Cross-check of number scoring", "",
             "The same generations scored by our checker, by math-verify (`verify(parse(reference), parse(answer "
             "line))`) and by lm-evaluation-harness's gsm8k flexible-extract rule (last number, exact match).", "",
             "| model | data | n | ours | math-verify | lm-eval rule | cases where a scorer differs from ours |",
             "|---|---|---|---|---|---|---|"]
    for r in checked:
        c = r.crosscheck
        lines.append(f"| {r.model} | {r.data} | {c['n']} | {c['ours_correct']} | {c['math_verify_correct']} | "
                     f"{c['lm_eval_correct']} | {len(c['disagreements'])} |")
    for r in checked:
        cases = r.crosscheck["disagreements"]
        if cases:
            lines += ["", f"{r.model} on {r.data}: first {min(shown, len(cases))} of {len(cases)}", ""]
            lines += [f"- `{d['id']}` reference {d['reference']}, answer `{d['answer']}`: ours "
                      f"{'right' if d['ours'] else 'wrong'}, math-verify {'right' if d['math_verify'] else 'wrong'} "
                      f"(parsed `{d['math_verify_parsed']}`), lm-eval {'right' if d['lm_eval'] else 'wrong'}"
                      for d in cases[:shown]]
    return lines


def evaluate_one(spec: str, data: str, settings: EvalConfig, *, shots: int = 0, limit: int | None = None,
                 skip: int = 0, fmt: str | None = None, seed: int = 0, allow_network: bool = False,
                 tables: list[str] = (), value_hints: bool = False,
                 name_hints: bool = False) -> tuple[EvalResult, list]:
    """One model on one benchmark, through the same loader, worked examples and evaluation as `compare`, stored
    nowhere (`edgedistill eval` with one model and no --out); (the result, its questions)."""
    from edgedistill.datasets import load_benchmark, worked_examples
    from edgedistill.formats import answer_first_target
    tool = open_named_tables(list(tables))
    questions = with_schema(load_benchmark(data, fmt=fmt, limit=limit, skip=skip), tool, value_hints, name_hints)
    examples = [(q, answer_first_target(q)) for q in worked_examples(data, shots)]
    model = Model(spec, allow_network=allow_network, threads=settings.threads)
    return evaluate_cached(model, questions, cache=None, settings=settings, shots=examples, seed=seed,
                           label="eval", tables=tool), questions


def write_comparison(out: Path, results: list[EvalResult], settings: EvalConfig, selection: dict | None = None
                     ) -> dict:
    """report.md, report.json and the plots of the results; `selection`: which questions (seed, limit, skip, format),
    recorded with the settings."""
    plots = write_plots(results, out)
    report = {"settings": {**asdict(settings), **(selection or {})}, "plots": plots,
              "results": [r.to_dict(rows=False) for r in results],
              "paired": {data: paired_tests([r for r in results if r.data == data])
                         for data in dict.fromkeys(r.data for r in results)}}
    write_json_atomic(out / "report.json", report)
    k = settings.samples
    lines = ["# edgedistill evaluation report", "",
             "Greedy pass@1 with the calculator (95% Wilson interval)"
             + (f"; pass@{k} (unbiased) and maj@{k} from {k} samples at temperature {settings.temperature}"
                if k > 1 else "")
             + f"; every decode stops at the end of the Answer line (at most {settings.max_new_tokens} new tokens)."
             + (f" ECE and Brier score the app's confidence: raw is the share of the {k} samples agreeing with the "
                f"greedy answer, calibrated maps that share to accuracy with a calibration fitted on the other half "
                f"of the questions (2-fold cross-fitting)." if k > 1 else "")
             + f" Seconds are wall time on this machine, batched ({settings.batch_size} rows), so per-question times "
               f"are amortised."]
    for data in dict.fromkeys(r.data for r in results):
        rows = [r for r in results if r.data == data]
        lines += ["", f"## {data}", ""] + summary_table(rows, k) + label_table(rows) + text_table(rows) + paired_table(rows) + \
            skipped_section(rows) + end_table(rows) + topic_table(rows)
    lines += crosscheck_section(results)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{what}]({name})" for what, name in plots.items()]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    return report
