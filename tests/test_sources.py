"""`data.train` as a list of sources: each source's questions, limit and loss weight reach the SFT records; a single
path keeps working; ids may not repeat across sources."""
from __future__ import annotations

import json

import pytest
import yaml

from edgedistill import UserError
from edgedistill.config import load_config
from edgedistill.teacher import distill


def seeds(path, prefix, n):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "question": f"A press makes {10 + i} parts an hour. "
                                        f"How many in {i + 2} hours?", "answer": str((10 + i) * (i + 2)),
                                        "rationale": f"<<{10 + i}*{i + 2}={(10 + i) * (i + 2)}>> parts."}) + "\n"
                        for i in range(n)))
    return path


def config_with(tmp_path, train):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": train, "eval": "shopfloor:dev"}}))
    return load_config(path)


def test_sources_carry_their_limit_and_weight_into_the_sft_records(tmp_path):
    a, b = seeds(tmp_path / "a.jsonl", "a", 5), seeds(tmp_path / "b.jsonl", "b", 4)
    config = config_with(tmp_path, [{"source": str(a), "limit": 3}, {"source": str(b), "weight": 0.5}])
    summary = distill.run_teacher(config, tmp_path / "teacher")
    rows = [json.loads(line) for line in (tmp_path / "teacher" / "sft" / "train.jsonl").read_text().splitlines()]
    assert summary["questions"] == 7 and sorted(r["id"].split("#")[0] for r in rows) == \
        ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]
    assert {r["id"][0]: r.get("weight", 1.0) for r in rows} == {"a": 1.0, "b": 0.5}


def test_a_single_path_and_a_list_of_plain_paths_still_work(tmp_path):
    a = seeds(tmp_path / "a.jsonl", "a", 3)
    assert [s.source for s in config_with(tmp_path, str(a)).data.sources()] == [str(a)]
    assert [(s.source, s.weight) for s in config_with(tmp_path, [str(a), "shopfloor:dev"]).data.sources()] == \
        [(str(a), 1.0), ("shopfloor:dev", 1.0)]


def test_an_id_in_two_sources_is_an_error_naming_both(tmp_path):
    a, b = seeds(tmp_path / "a.jsonl", "x", 2), seeds(tmp_path / "b.jsonl", "x", 2)
    with pytest.raises(UserError, match=r"'x0' is in both .*a.jsonl and .*b.jsonl"):
        distill.run_teacher(config_with(tmp_path, [str(a), str(b)]), tmp_path / "teacher")


@pytest.mark.parametrize("train, message", [([], "non-empty list"), ([{"source": "x.jsonl"}], "file not found"),
                                            ([{"source": "shopfloor:dev", "weight": -1}], "weight"),
                                            ([{"sorce": "a"}], "did you mean 'data.train\\[0\\].source'")])
def test_bad_sources_are_one_clear_error(tmp_path, train, message):
    with pytest.raises(UserError, match=message):
        config_with(tmp_path, train)
