"""The feedback flywheel, end to end on a tiny model: questions the student gets wrong are corrected through the
app's API, one `edgedistill run --feedback` trains on the corrections, and the new student answers them right
without losing what it answered before."""
from __future__ import annotations

import json

import pytest
import yaml

from edgedistill.cli import main
from edgedistill.records import load_questions, load_sources
from edgedistill.config import TrainSource
from edgedistill.serve.feedback import FeedbackLog
from edgedistill.serve.process import serving

from tests.test_pipeline import QUESTIONS, write_jsonl

NEW = [("A lathe turns 70 shafts an hour. How many shafts does it turn in 6 hours?", "420"),
       ("A crate holds 16 valves. How many valves are in 9 crates?", "144"),
       ("A mixer fills 35 drums a shift. How many drums in 4 shifts?", "140")]


def flywheel_config(tmp_path, model_dir):
    """A tiny random model learns only what it is shown, so its seeds are label-only (`Answer: 420`) and it trains
    for many epochs: round 1 knows its 8 questions (the score that must not fall), round 2 can learn the
    corrections. No GGUF: the app serves the merged student."""
    data = write_jsonl(tmp_path / "seeds.jsonl", [{k: q[k] for k in ("id", "question", "answer")} for q in QUESTIONS])
    config = {"data": {"train": str(data), "eval": str(data), "dev": str(data)},
              "teacher": {"select": {"decontaminate_eval": False}},
              "student": {"model": str(model_dir), "method": "full", "epochs": 60, "batch_size": 2,
                          "learning_rate": 1e-2, "checkpoint_every": 1000},
              "export": {"gguf": False, "onnx": "none"},
              "eval": {"batch_size": 4, "max_new_tokens": 24, "base": False, "samples": 1}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pass_at_1(model, data, capsys) -> float:
    assert main(["eval", "--model", str(model), "--data", str(data), "--k", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pass@1"]


@pytest.mark.slow
def test_corrections_through_the_app_are_learned_in_one_run(tmp_path, tiny_model_dir, capsys):
    config = flywheel_config(tmp_path, tiny_model_dir)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "round1")]) == 0
    round1 = tmp_path / "round1" / "student" / "merged"
    new = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "question": q, "answer": a}
                                               for i, (q, a) in enumerate(NEW)])
    capsys.readouterr()
    before_new, before_old = pass_at_1(round1, new, capsys), pass_at_1(round1, tmp_path / "seeds.jsonl", capsys)
    assert before_new == 0.0 and before_old > 0

    feedback = tmp_path / "feedback.jsonl"
    from gradio_client import Client
    with serving(str(round1), "--samples", "0", "--feedback", str(feedback), log_path=tmp_path / "app.log") as url:
        app = Client(url, verbose=False)
        for question, right in NEW:
            answer, *_ = app.predict(question, True, api_name="/answer")
            said = app.predict(question, answer.removeprefix("## "), "down", right, "number", [], api_name="/feedback")
            assert "with reference answer" in said
    rows = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert [(r["answer"], r["checked_by"]) for r in rows] == [(a, "human") for _, a in NEW]

    assert main(["run", "--config", str(config), "--feedback", str(feedback), "--out", str(tmp_path / "round2")]) == 0
    round2 = tmp_path / "round2" / "student" / "merged"
    capsys.readouterr()
    assert pass_at_1(round2, new, capsys) == 1.0                       # the corrected questions, now right
    assert pass_at_1(round2, tmp_path / "seeds.jsonl", capsys) >= before_old   # and nothing it knew forgotten


def test_a_thumbs_up_trains_at_the_model_confirmed_weight(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl", "m", "number")
    log.record("6 times 7?", "42", "up")                      # the model's own answer, confirmed
    log.record("6 times 8?", "46", "down", correction="48")   # a person's correction
    log.record("6 times 9?", "50", "down")                    # no answer: kept apart for an expert
    rows = {q.question: q for q in load_questions(tmp_path / "feedback.jsonl")}
    assert (rows["6 times 7?"].checked_by, rows["6 times 8?"].checked_by) == ("model", "human")
    assert "6 times 9?" not in rows
    weights = {q.question: q.weight for q in load_sources([TrainSource(str(tmp_path / "feedback.jsonl"), 2.0)])}
    assert weights == {"6 times 7?": 1.0, "6 times 8?": 2.0}
    weights = {q.question: q.weight for q in load_sources([TrainSource(str(tmp_path / "feedback.jsonl"),
                                                                       model_confirmed_weight=0.25)])}
    assert weights == {"6 times 7?": 0.25, "6 times 8?": 1.0}
    # a row written before feedback said who checked it: read from its verdict
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"question": "q", "answer": "5", "verdict": "up", "model_answer": "5"}) + "\n")
    assert load_questions(old)[0].checked_by == "model"


def test_a_missing_or_bad_feedback_file_stops_the_run_before_any_stage(tmp_path, tiny_model_dir, capsys):
    config = flywheel_config(tmp_path, tiny_model_dir)
    assert main(["run", "--config", str(config), "--feedback", str(tmp_path / "nope.jsonl"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "feedback.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1", "checked_by": "boss"}) + "\n")
    assert main(["run", "--config", str(config), "--feedback", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "feedback.jsonl:1: checked_by must be one of" in capsys.readouterr().err
    assert not (tmp_path / "run" / "teacher").exists()
