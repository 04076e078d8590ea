"""Deterministic generator of shop-floor arithmetic word problems: `python tools/shopfloor_seeds.py [OUT_DIR]`.

A build-time tool, not part of the runtime package. Writes three JSON-lines files into edgedistill/seeds/, the
package data the runtime loads (or into OUT_DIR):
- shopfloor_train.jsonl   (1000 records) and shopfloor_dev.jsonl (120 records): the TRAIN wordings;
- shopfloor_heldout.jsonl (6 records per problem type): only the HELD-OUT wordings, with other machine,
  part and line names, so it measures whether a student copes with phrasings it never saw.

Design
- A problem type (one `Problem` entry in `PROBLEMS`, tools/shopfloor_problems.py) is a topic, a `draw`
  function that picks the numbers (as the text the question shows), the answer expression, a rationale
  template and two lists of question wordings: `train` (4 each) and `heldout` (2 each, written from another
  point of view: an operator's question, a supervisor's note, a terse log line, numbers in another order).
  A held-out wording is never used for train or dev.
- Every number is computed by `edgedistill.calculator`: `answer = format_number(evaluate(answer_expr))`, and
  each `<<expr>>` in a rationale becomes `<<expr=value>>` with the calculator's own value, exactly what the
  runtime would fill in at decoding time. `derived` names intermediate values a rationale quotes.
- A question that asks for one decimal place has `round(x*10)/10` as its expression: one pattern for all
  rounding, which a small student learns once.
- A draw is rejected and redrawn (same seeded generator, so still deterministic) when the answer has more
  than 2 decimals, is not whole where it must be, sits on a rounding tie or duplicates an earlier question.
  Checks that can only fail because a template is wrong raise at once: a number of the expression missing
  from the question, "a 8-hour", "1 hours", a bad annotation, and, once all splits are built, any 8-word run
  (lower-cased, punctuation stripped) shared by a held-out question and a train or dev question.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from edgedistill.calculator import ANNOTATION, check_annotations
from edgedistill.checkers import word_runs

from shopfloor_problems import NAMES, PROBLEMS, Problem, calc

SEEDS_DIR = Path(__file__).resolve().parent.parent / "edgedistill" / "seeds"
SEED = 20261123
SOURCE = "edgedistill-shopfloor"
N_TRAIN, N_DEV, HELDOUT_PER_TYPE = 1000, 120, 6
NGRAM = 8
MAX_TRIES = 2000
# Numbers an expression may use without the question showing them (unit factors, percent, rounding, count).
CONSTANTS = {"3", "5", "9", "10", "32", "60", "100", "1000", "3600", "10000", "25.4"}
KEYS = ("id", "question", "answer", "answer_type", "answer_expr", "rationale", "topic", "source")


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Every n-token run (edgedistill.checkers.word_runs: the teacher's new questions pass the same check)."""
    return word_runs(text, n)


def _template_error(question: str, expr: str, rationale: str, answer: str) -> str | None:
    """A problem that only a wrong template can cause; None when the record is sound."""
    shown = set(re.findall(r"\d+(?:\.\d+)?", question))
    missing = set(re.findall(r"\d+(?:\.\d+)?", expr)) - shown - CONSTANTS
    if missing:
        return f"numbers {sorted(missing)} of {expr!r} are not in the question"
    if (re.search(r"(?<!Line )\b[Aa] [\daeiouAEIOU]", question) or re.search(r"(?<![\d.])1 [a-z]+s\b", question)
            or re.search(r"[{}]", question + rationale)):
        return "bad article, '1 hours' or unfilled placeholder"
    notes = ANNOTATION.findall(rationale)
    if check_annotations(rationale) or not notes or notes[-1][1] != answer:
        return "rationale annotations do not check out"
    return None


def make_record(problem: Problem, wording: str, names: dict, r: random.Random) -> dict | None:
    """One question from `wording` with fresh numbers, or None when this draw must be rejected."""
    fields = problem.draw(r)
    if fields is None:
        return None
    for key, template in problem.derived.items():
        fields[key] = calc(template.format(**fields))
    expr = problem.expr.format(**fields)
    answer = calc(expr)
    if (len(answer.partition(".")[2]) > 2 or float(answer) <= 0 or float(answer) >= 1e6
            or (problem.whole and "." in answer)
            or ("round(" in expr and calc(expr.replace("round(", "floor(0.5+")) != answer)):
        return None   # long decimals, out of range, a fraction of a part, or a round-half-even tie
    question = wording.format(**names, **fields)
    rationale = re.sub(r"<<([^<>=]*)>>", lambda m: f"<<{m.group(1)}={calc(m.group(1))}>>",
                       problem.rationale.format(**fields))
    error = _template_error(question, expr, rationale, answer)
    if error:
        raise ValueError(f"{problem.topic}: {error}\n  {question}\n  {expr}\n  {rationale}")
    return {"question": question, "answer": answer, "answer_type": "number", "answer_expr": expr,
            "rationale": rationale, "topic": problem.topic, "source": SOURCE}


def build_split(split: str, size: int, r: random.Random, seen: set[str]) -> list[dict]:
    """`size` records cycling through the problem types in order, and through each type's wordings in turn
    (each type starting at a different wording, so that a short split still uses every wording)."""
    kind = "heldout" if split == "heldout" else "train"
    problems = list(PROBLEMS.items())
    records = []
    for i in range(size):
        name, problem = problems[i % len(problems)]
        wordings = getattr(problem, kind)
        wording = wordings[(i // len(problems) + i % len(problems)) % len(wordings)]
        for _ in range(MAX_TRIES):
            names = {key: r.choice(pool) for key, pool in NAMES[kind].items()}
            record = make_record(problem, wording, names, r)
            if record and record["question"] not in seen:
                break
        else:
            raise RuntimeError(f"{name}: no acceptable {split} question from wording {wording!r}")
        seen.add(record["question"])
        records.append({"id": f"shop-{split}-{i + 1:04d}", **record})
    return records


def build() -> dict[str, list[dict]]:
    """All three splits, from the fixed seed."""
    for name, problem in PROBLEMS.items():
        if len(problem.train) + len(problem.heldout) < 5 or not problem.heldout:
            raise ValueError(f"{name}: needs at least 5 wordings, some held out")
    r, seen = random.Random(SEED), set()
    splits = {"train": build_split("train", N_TRAIN, r, seen), "dev": build_split("dev", N_DEV, r, seen)}
    splits["heldout"] = build_split("heldout", HELDOUT_PER_TYPE * len(PROBLEMS), r, seen)
    seen_runs = set().union(*(ngrams(rec["question"]) for split in ("train", "dev") for rec in splits[split]))
    for rec in splits["heldout"]:
        shared = ngrams(rec["question"]) & seen_runs
        if shared:
            raise ValueError(f"{rec['id']} shares the {NGRAM}-word run {' '.join(min(shared))!r} with train/dev; "
                             "reword its held-out template")
    return splits


def write(out_dir: str | Path = SEEDS_DIR) -> dict[str, Path]:
    """Write shopfloor_{train,dev,heldout}.jsonl into `out_dir` (default: edgedistill/seeds/); return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, records in build().items():
        paths[split] = out / f"shopfloor_{split}.jsonl"
        with open(paths[split], "w", encoding="utf-8", newline="\n") as handle:
            for rec in records:
                handle.write(json.dumps({key: rec[key] for key in KEYS}, ensure_ascii=False) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("out_dir", nargs="?", default=SEEDS_DIR, type=Path,
                        help="where to write the three files (default: %(default)s)")
    for split_name, path in write(parser.parse_args(argv).out_dir).items():
        print(f"{split_name}: {path}")


if __name__ == "__main__":
    main()
