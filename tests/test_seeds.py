"""The shipped shop-floor seed problems: format, arithmetic, held-out separation, reproducibility."""
import json
import string
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.calculator import ANNOTATION, check_annotations, evaluate, format_number
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
