"""The shipped shop-floor seed problems: format, arithmetic, held-out separation, reproducibility."""
import json
import string
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.calculator import ANNOTATION, check_annotations, evaluate, format_number, numbers_match
from edgedistill.records import SEEDS_DIR as SEEDS

TOOLS = Path(__file__).resolve().parent.parent / "tools"   # the generator is a build-time tool, not package code
SPLITS = ("train", "dev", "heldout")
KEYS = ["id", "question", "answer", "answer_type", "answer_expr", "rationale", "topic", "source"]
REQUIRED_TOPICS = {"throughput", "oee", "takt_time", "cycle_time", "scrap_yield", "unit_conversion", "packing",
                   "spc", "energy_cost", "inventory", "downtime", "mtbf_mttr", "labour", "material_usage",
                   "utilisation", "changeover"}


def _load(split):
    with open(SEEDS / f"shopfloor_{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def data():
    return {split: _load(split) for split in SPLITS}


def _eight_grams(text):
    words = [w.strip(string.punctuation) for w in text.lower().split()]
    words = [w for w in words if w]
    return {tuple(words[i:i + 8]) for i in range(len(words) - 7)}


def test_files_parse_with_keys_sizes_and_unique_ids(data):
    assert len(data["train"]) == 1000
    assert len(data["dev"]) == 120
    assert len(data["heldout"]) >= 240
    records = [rec for split in SPLITS for rec in data[split]]
    for rec in records:
        assert list(rec) == KEYS, rec["id"]
        assert rec["answer_type"] == "number" and isinstance(rec["answer"], str)
    assert len({rec["id"] for rec in records}) == len(records)
    assert len({rec["question"] for rec in records}) == len(records), "a question text appears twice"


def test_answers_and_rationales_check_out(data):
    for split in SPLITS:
        for rec in data[split]:
            assert format_number(evaluate(rec["answer_expr"])) == rec["answer"], rec["id"]
            assert check_annotations(rec["rationale"]) == [], rec["id"]
            notes = ANNOTATION.findall(rec["rationale"])
            assert notes and notes[-1][1] == rec["answer"], rec["id"]


def test_no_heldout_eight_word_run_in_train_or_dev(data):
    seen = set()
    for split in ("train", "dev"):
        for rec in data[split]:
            seen |= _eight_grams(rec["question"])
    leaks = [rec["id"] for rec in data["heldout"] if _eight_grams(rec["question"]) & seen]
    assert not leaks, f"held-out questions sharing an 8-word run with train/dev: {leaks[:10]}"


def test_regenerating_reproduces_the_shipped_files(tmp_path):
    out = tmp_path / "out"     # run as documented, from another directory
    done = subprocess.run([sys.executable, str(TOOLS / "shopfloor_seeds.py"), str(out)], cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"{split}: {out / f'shopfloor_{split}.jsonl'}" for split in SPLITS]
    for split in SPLITS:
        shipped = (SEEDS / f"shopfloor_{split}.jsonl").read_bytes()
        assert (out / f"shopfloor_{split}.jsonl").read_bytes() == shipped, split


def test_the_generator_writes_where_the_runtime_reads(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import shopfloor_seeds
    assert shopfloor_seeds.SEEDS_DIR == SEEDS.resolve()


def test_every_topic_in_every_split(data):
    topics = {split: {rec["topic"] for rec in data[split]} for split in SPLITS}
    assert REQUIRED_TOPICS <= topics["train"]
    assert topics["train"] == topics["dev"] == topics["heldout"]


@pytest.mark.parametrize("split, seeds, kinds, at_least", [("evolved", "train", {"reword", "vary", "compose"}, 200),
                                                          ("dev_reworded", "dev", {"reword"}, 40)])
def test_the_evolved_splits_are_verified_clean_and_traceable(data, split, seeds, kinds, at_least):
    """`shopfloor:evolved` and `shopfloor:dev_reworded` (the 1.5B teacher's kept questions, tools/ship_evolved.py):
    every answer is its expression's value, every rationale's annotations compute, every record names its seed (in
    the split it was written from), kind, teacher, prompt hash and agreement, and no question shares an 8-word run
    with dev or held-out."""
    evolved = [json.loads(line) for line in (SEEDS / f"shopfloor_{split}.jsonl").read_text().splitlines()]
    seed_ids = {rec["id"] for rec in data[seeds]}
    held = set().union(*(_eight_grams(rec["question"]) for name in ("dev", "heldout") for rec in data[name]))
    assert len(evolved) >= at_least and len({rec["id"] for rec in evolved}) == len(evolved)
    for rec in evolved:
        assert numbers_match(rec["answer"], evaluate(rec["answer_expr"])), rec["id"]
        assert check_annotations(rec["rationale"]) == [], rec["id"]
        origin = rec["provenance"]
        assert origin["seed_id"] in seed_ids and origin["kind"] in kinds, rec["id"]
        assert origin["agreement"] >= 0.6 and origin["prompt_sha256"] and origin["teacher"], rec["id"]
        assert not _eight_grams(rec["question"]) & held, rec["id"]
    card = (SEEDS / f"shopfloor_{split}.md").read_text()
    assert "Licence: Apache-2.0" in card and "## Kept (examples)" in card and "## Rejected (examples)" in card
