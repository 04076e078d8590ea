"""Which data and recipe make the student generalise: variants trained at the same budget, scored on dev splits only.

    .venv/bin/python benchmarks/generalisation.py --variants variants.yaml [--out runs/generalisation]
    .venv/bin/python benchmarks/generalisation.py --only 'seeds only;seeds + evolved'      # the default variants

A variant is a name and config overrides on top of `--base` (the quickstart config), e.g.

    seeds + evolved, all layers:
      data: {train: [{source: shopfloor:train}, {source: shopfloor:evolved}]}
      student: {lora_layers_fraction: 1.0}

Each variant runs the teacher and student stages (teacher/run.py, student/run.py: the same code as `edgedistill
run`, no export) into `--out/<variant>/`, then its merged student is scored greedy and with k=4 samples on every
`--dev` split. The held-out split is never read here: choose on dev, report held-out once, in the quickstart. Every
finished stage and score is stored and skipped on a rerun. Last line: `best=<variant> dev_pass@1=<mean>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import yaml

from edgedistill.config import Config, load_config
from edgedistill.datasets import load_benchmark
from edgedistill.generation import load_generator
from edgedistill.metrics import evaluate
from edgedistill.records import write_json_atomic
from edgedistill.rundir import RunDir
from edgedistill.results import PASS_AT_1, maj_at


def deep_merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV_SPLITS = ["shopfloor:dev", f"{SHARED / 'gsm8k' / 'train.jsonl'}[7273:7473]",
              f"{SHARED / 'svamp' / 'SVAMP.json'}[:300]"]
# The same budget for every variant: selection keeps BUDGET records (clusters take turns, hardest first), so a
# variant with more data gets a more diverse 800, not more steps.
BUDGET = {"data": {"train_limit": None}, "teacher": {"select": {"budget": 800}}, "student": {"epochs": 1.0}}
VARIANTS = {
    "seeds only": deep_merge(BUDGET, {"data": {"train": [{"source": "shopfloor:train"}]}}),
    "seeds + evolved": deep_merge(BUDGET, {"data": {"train": [{"source": "shopfloor:train"},
                                                              {"source": "shopfloor:evolved"}]}}),
}
HELD_OUT = ("heldout",)


def variant_config(base: Path, overrides: dict) -> Config:
    """The base config file with the overrides merged in, read back through the config loader (so validated)."""
    raw = yaml.safe_load(base.read_text())
    merged = deep_merge(raw, overrides)
    path = Path("/tmp") / f"generalisation-{abs(hash(json.dumps(merged, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(merged))
    config = load_config(path)
    config.student.report_to = []
    return config


def slug(name: str) -> str:
    """A folder or file name for a variant or split: letters and digits kept, the rest dashes."""
    return "".join(c if c.isalnum() else "-" for c in Path(name).name.lower())


def train(config: Config, folder: Path) -> dict:
    from edgedistill.student.run import run as run_student
    from edgedistill.teacher.run import run as run_teacher
    rundir = RunDir(folder)
    timings = {}
    for stage, run, done in (("teach", run_teacher, rundir.teacher.sft_answer_first),
                             ("train", run_student, rundir.student.merged / "config.json")):
        if not done.exists():
            started = time.time()
            run(config, rundir)
            timings[stage] = round(time.time() - started, 1)
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="configs/quickstart.yaml")
    parser.add_argument("--variants", help="YAML of {name: overrides}; default: seeds only, seeds + evolved")
    parser.add_argument("--only", default="", help="semicolon-separated variant names")
    parser.add_argument("--dev", action="append", help=f"dev splits (default: {DEV_SPLITS})")
    parser.add_argument("--out", default="runs/generalisation")
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    variants = yaml.safe_load(Path(args.variants).read_text()) if args.variants else VARIANTS
    wanted = [n.strip() for n in args.only.split(";") if n.strip()] or list(variants)
    unknown = set(wanted) - set(variants)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(variants)}")
    devs = args.dev or DEV_SPLITS
    if any(word in dev for dev in devs for word in HELD_OUT):
        parser.error("a held-out split is not a dev split: choose on dev, report held-out once")
    out = Path(args.out)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for name in wanted:
        folder = out / slug(name)
        config = variant_config(Path(args.base), variants[name])
        timings = train(config, folder)
        generator = None
        for dev in devs:
            key = f"{name} | {dev}"
            if key in results:
                continue
            generator = generator or load_generator(str(RunDir(folder).student.merged), backend="transformers")
            scored = evaluate(generator, load_benchmark(dev), k=args.k, label=key)
            # The rows too (greedy text, k sampled Answer lines): benchmarks/confidence_signals.py reads them.
            write_json_atomic(folder / f"eval-{slug(dev)}.json", scored.to_dict())
            results[key] = scored.to_dict(rows=False) | {"train_seconds": timings}
            write_json_atomic(out / "results.json", results)
            r = results[key]
            print(f"{key:70} pass@1 {r[PASS_AT_1]:.1%} [{r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}] "
                  f"maj@{args.k} {r.get(maj_at(args.k), 0):.1%}", flush=True)
    means = {name: sum(results[f"{name} | {d}"][PASS_AT_1] for d in devs) / len(devs) for name in wanted}
    best = max(means, key=means.get)
    print(f"best={best!r} dev_pass@1={means[best]:.4f}")


if __name__ == "__main__":
    main()
