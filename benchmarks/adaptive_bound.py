"""Can adaptive thinking help this student? Its ceiling, measured: a perfect per-question choice between thinking
first and answering first.

    .venv/bin/python benchmarks/adaptive_bound.py [--config configs/quickstart.yaml] [--out runs/adaptive_bound]

Adaptive thinking (benchmarks/adaptive_thinking.py, docs/algorithms.md#8-adaptive-thinking) picks, per question, rationale-first
or answer-first decoding. Whatever picks, it can be right at most where one of the two modes is right. So: the same
teacher data trained answer-first and rationale-first at the same compute (the student stage with `student.format`),
both scored greedy with the calculator on each `--dev` split, and the oracle that takes whichever is right. When the
oracle is within a few points of answer-first alone, no chooser can earn its keep. Last line:
`answer_first=A rationale_first=R oracle=O` (mean over the dev splits).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from edgedistill.config import load_config
from edgedistill.datasets import load_benchmark
from edgedistill.formats import INSTRUCTION_RATIONALE_FIRST
from edgedistill.generation import load_generator
from edgedistill.metrics import evaluate
from edgedistill.records import write_json_atomic
from edgedistill.rundir import RunDir

MODES = {"answer_first": {}, "rationale_first": {"instruction": INSTRUCTION_RATIONALE_FIRST, "max_new_tokens": 160}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--dev", action="append", help="dev splits (default: shopfloor:dev)")
    parser.add_argument("--out", default="runs/adaptive_bound")
    args = parser.parse_args()
    from edgedistill.student.run import run_student
    from edgedistill.teacher.run import run as run_teacher
    config = load_config(args.config)
    config.student.report_to = []
    out = Path(args.out)
    rundir = RunDir(out)
    if not rundir.teacher.sft_rationale_first.exists():
        run_teacher(config, rundir)
    scores = json.loads((out / "scores.json").read_text()) if (out / "scores.json").exists() else {}
    for mode, options in MODES.items():
        folder = out / mode
        if not (folder / "merged" / "config.json").exists():
            variant = dataclasses.replace(config, student=dataclasses.replace(config.student, format=mode))
            run_student(variant, rundir.teacher.root, folder)
        generator = None
        for dev in args.dev or ["shopfloor:dev"]:
            key = f"{mode} | {dev}"
            if key not in scores:
                generator = generator or load_generator(str(folder / "merged"), backend="transformers")
                result = evaluate(generator, load_benchmark(dev), k=1, label=key, **options)
                scores[key] = {row.id: row.correct for row in result.rows}
                write_json_atomic(out / "scores.json", scores)
    means = {"answer_first": [], "rationale_first": [], "oracle": []}
    for dev in args.dev or ["shopfloor:dev"]:
        first, second = scores[f"answer_first | {dev}"], scores[f"rationale_first | {dev}"]
        n = len(first)
        for name, right in (("answer_first", sum(first.values())), ("rationale_first", sum(second.values())),
                            ("oracle", sum(first[i] or second.get(i, False) for i in first))):
            means[name].append(right / n)
            print(f"{dev:30} {name:16} {right}/{n} = {right / n:.1%}")
    print(" ".join(f"{name}={sum(v) / len(v):.4f}" for name, v in means.items()))


if __name__ == "__main__":
    main()
