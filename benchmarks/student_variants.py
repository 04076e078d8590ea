"""The student results page (docs/results.md): one teacher dataset, every student recipe, the same evaluation.

    .venv/bin/python benchmarks/student_variants.py [--out runs/variants]     # about 65 minutes on 2 cores

Teacher data: the quickstart's (400 shop-floor seeds, reference rationales answer-first, and the same content
rationale-first). Students, all from the packaged SmolLM2-135M-Instruct with the quickstart's LoRA:
    rationale-first SFT      2 epochs on rationale_first.jsonl (the same compute as answer-first SFT)
    answer-first SFT         2 epochs on train.jsonl (the quickstart student)
    + DPO                    from answer-first SFT; pairs = verified reference (chosen) against the SFT student's own
                             wrong answers on the training questions (rejected, InfiAlign's recipe), 1 epoch
    + GRAO                   from answer-first SFT, 10 on-policy steps of 4 prompts x 4 samples
    + pass@4 RL              the same, leave-one-out pass@k advantages
Evaluation, for each: the shipped held-out split (258 shop-floor questions) and 60 GSM8K questions held out from
../shared/data (the last 60 of train.jsonl; no shop-floor seed comes from it): greedy pass@1 with a 95% interval,
pass@4 and maj@4 from 4 samples at temperature 0.7, mean tokens to the answer; answer-first SFT also without the
calculator. Every finished piece is stored under --out and skipped on a rerun.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml

from edgedistill.config import load_config
from edgedistill.formats import INSTRUCTION_RATIONALE_FIRST, answer_first_target
from edgedistill.generation import load_generator
from edgedistill.records import load_questions, write_json_atomic
from edgedistill.metrics import evaluate
from edgedistill.results import PASS_AT_1

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


# Each row of the results table: the model it evaluates and how (metrics.evaluate options).
ROWS = ["base (2-shot)", "rationale-first SFT", "rationale-first SFT, no calculator", "answer-first SFT",
        "answer-first SFT, no calculator", "answer-first SFT + DPO", "answer-first SFT + GRAO",
        "answer-first SFT + pass@4 RL"]


def cached(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    write_json_atomic(path, value)
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/variants")
    parser.add_argument("--gsm8k", type=int, default=60)
    parser.add_argument("--online-steps", type=int, default=10)
    parser.add_argument("--only", default="", help="semicolon-separated row names to compute (default: every row); "
                        "e.g. --only 'base (2-shot);answer-first SFT' skips training the rest")
    args = parser.parse_args()
    wanted = [name.strip() for name in args.only.split(";") if name.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {list(ROWS)}")
    wanted = wanted or list(ROWS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config("configs/quickstart.yaml")
    config.student.report_to = []
    gsm8k_dev = out / "gsm8k_dev.jsonl"
    if not gsm8k_dev.exists():
        gsm8k_dev.write_text("".join(GSM8K.read_text().splitlines(keepends=True)[-args.gsm8k:]))
    splits = {"shop-floor held-out": load_questions("shopfloor:heldout"), "GSM8K dev": load_questions(gsm8k_dev)}
    timings = {}

    def timed(name, compute):
        started = time.time()
        value = compute()
        timings[name] = round(time.time() - started, 1)
        return value

    from edgedistill.student.dpo import run_dpo
    from edgedistill.student.online import run_online
    from edgedistill.student.sft import run_sft
    from edgedistill.teacher.distill import run_teacher
    teacher = out / "teacher"
    if not (teacher / "sft" / "rationale_first.jsonl").exists():
        run_teacher(config, teacher)
    models = {}
    for name, fmt, file in [("answer-first SFT", "answer_first", "train.jsonl"),
                            ("rationale-first SFT", "rationale_first", "rationale_first.jsonl")]:
        folder = out / fmt
        if not (folder / "merged" / "config.json").exists():
            variant = dataclasses.replace(config, student=dataclasses.replace(config.student, format=fmt))
            timed(name, lambda: run_sft(variant, teacher / "sft" / file, folder))
        models[name] = folder / "merged"
    sft_model = str(models["answer-first SFT"])

    needs = {row.split(",")[0] for row in wanted}
    negatives = out / "teacher_negatives"        # the SFT student's own wrong answers, for DPO's rejected side
    if "answer-first SFT + DPO" in needs and not (negatives / "preferences" / "train.jsonl").exists():
        variant = dataclasses.replace(config, teacher=dataclasses.replace(
            config.teacher, negatives_model=sft_model, negatives_zero_shot=True, negatives_samples=2,
            negatives_temperature=1.0, batch_size=32))
        timed("negatives from the student", lambda: run_teacher(variant, negatives))
    if "answer-first SFT + DPO" in needs and not (out / "dpo" / "merged" / "config.json").exists():
        timed("DPO", lambda: run_dpo(config, negatives / "preferences" / "train.jsonl", out / "dpo", sft_model))
    models["answer-first SFT + DPO"] = out / "dpo" / "merged"
    for objective, name in [("grao", "answer-first SFT + GRAO"), ("pass", "answer-first SFT + pass@4 RL")]:
        folder = out / objective
        if name in needs and not (folder / "merged" / "config.json").exists():
            online = dataclasses.replace(config.student.online, objective=objective, steps=args.online_steps)
            variant = dataclasses.replace(config, student=dataclasses.replace(config.student, online=online))
            timed(name, lambda: run_online(variant, teacher / "sft" / "train.jsonl", folder, sft_model))
        models[name] = folder / "merged"

    shots = [(q, answer_first_target(q)) for q in load_questions("shopfloor:train", limit=2)]
    runs = [(name, str(models[name]), {}) for name in ("answer-first SFT", "answer-first SFT + DPO",
                                                        "answer-first SFT + GRAO", "answer-first SFT + pass@4 RL",
                                                        "rationale-first SFT")]
    runs += [("base (2-shot)", config.student.model, {"shots": shots}),
             ("answer-first SFT, no calculator", sft_model, {"calculator": False}),
             ("rationale-first SFT, no calculator", str(models["rationale-first SFT"]), {"calculator": False})]
    results = {}
    for name, model, options in [run for run in runs if run[0] in wanted]:
        generator = None
        for split, questions in splits.items():
            key = f"{name} | {split}"
            slug = "".join(c if c.isalnum() else "-" for c in key.lower())

            def scored():
                nonlocal generator
                generator = generator or load_generator(model, backend="transformers")
                rationale_first = name.startswith("rationale-first")
                result = evaluate(generator, questions, k=4, label=key,
                                  instruction=INSTRUCTION_RATIONALE_FIRST if rationale_first else None,
                                  max_new_tokens=160 if rationale_first else 48, **options)
                return result.to_dict(rows=False)
            results[key] = cached(out / "eval" / f"{slug}.json", scored)
            r = results[key]
            print(f"{key:60} pass@1 {r[PASS_AT_1]:.1%} [{r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}] pass@4 "
                  f"{r['pass@4']:.1%} maj@4 {r['maj@4']:.1%} tokens {r['tokens_to_answer']} ({r['seconds']} s)",
                  flush=True)
    write_json_atomic(out / "results.json", {"results": results, "train_seconds": timings})
    print(yaml.safe_dump({"train_seconds": timings}))


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
