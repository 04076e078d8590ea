"""Integration: the whole loop on a tiny random model, in seconds; resume, skip and bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from edgedistill import UserError
from edgedistill.cli import main

QUESTIONS = [
    {"id": f"q{i}", "question": f"A press makes {a} parts an hour. How many parts does it make in {b} hours?",
     "answer": str(a * b), "answer_expr": f"{a}*{b}", "rationale": f"{a} parts an hour for {b} hours: <<{a}*{b}={a * b}>> parts."}
    for i, (a, b) in enumerate([(60, 7), (45, 8), (30, 6), (12, 9), (25, 4), (80, 3), (15, 5), (40, 2)])
]


def wilson(correct, n, z=1.96):
    """The 95% Wilson score interval, written out here to check the report's against."""
    p, scale = correct / n, 1 + z * z / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [(centre - half) / scale, (centre + half) / scale]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tmp_path, model_dir, **overrides):
    data = write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS)
    config = {"data": {"train": str(data), "eval": str(data), "train_limit": None},
              "teacher": {"select": {"decontaminate_eval": False}},   # these tests evaluate on training questions
              "student": {"model": str(model_dir), "epochs": 2, "batch_size": 4, "checkpoint_every": 2,
                          "learning_rate": 1e-3},
              "eval": {"batch_size": 4, "max_new_tokens": 12, "base": True, "calibration_questions": 4}}
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_evaluating_on_the_training_file_is_caught_as_contamination(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"train": str(data), "eval": str(data), "train_limit": None},
                                      "student": {"model": str(tiny_model_dir)}}))
    assert main(["teach", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "selection kept none (8 contaminated" in error and "is data.eval the training file?" in error


def test_run_writes_report_and_second_run_skips(tmp_path, tiny_model_dir, capsys):
    other_task = write_jsonl(tmp_path / "sensors.jsonl", [   # eval.also: another task's questions, their own rows
        {"id": f"s{i}", "question": f"Which sensor shows wear on pump {i}?", "answer": "A", "answer_type": "choice",
         "options": ["A. vibration", "B. voltage"]} for i in range(3)])
    config = tiny_config(tmp_path, tiny_model_dir, eval__also=[str(other_task)])
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"base", "student", "seconds", "artifacts"}
    for name in ("base", "student", "gguf", "onnx"):       # each figure is what its own rows add up to
        rows = json.loads((out / "eval" / f"{name}.json").read_text())["rows"]
        assert [row["id"] for row in rows] == [q["id"] for q in QUESTIONS], name
        correct = sum(bool(row["correct"]) for row in rows)
        assert (report[name]["n"], report[name]["correct"]) == (len(QUESTIONS), correct), name
        assert report[name]["pass@1"] == pytest.approx(correct / len(QUESTIONS), abs=1e-4), name
        assert report[name]["ci95"] == pytest.approx(wilson(correct, len(QUESTIONS)), abs=1e-4), name
    for name in ("base", "gguf"):
        also = report[f"{name} {other_task}"]
        assert (also["n"], also["data"]) == (3, str(other_task)) and "s0" in (out / "eval").joinpath(
            f"{name}-sensors_jsonl.json").read_text()
    assert set(report["seconds"]) == {"teach", "train", "export", "eval"}
    assert report["gguf"]["n"] == len(QUESTIONS) and report["artifacts"]["gguf"].endswith("student-Q4_K_M.gguf")
    assert (out / report["artifacts"]["student"]).resolve() == (out / "student" / "merged").resolve() or \
        report["artifacts"]["student"].endswith("student/merged")
    assert (out / "student" / "merged" / "model.safetensors").exists()
    sft = [json.loads(line) for line in (out / "teacher" / "sft" / "train.jsonl").read_text().splitlines()]
    assert len(sft) == len(QUESTIONS)
    assert sft[0]["completion"][0]["content"].startswith("Answer: <<60*7=420>>\nReason:")
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "done" for s in ("teach", "train", "export", "eval"))
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("open the app:  edgedistill serve --model") and last.endswith("student-Q4_K_M.gguf")
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped") == 4


def test_changed_student_config_reruns_train_and_eval_only(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(["run", "--config", str(tiny_config(tmp_path, tiny_model_dir)), "--out", str(out)]) == 0
    capsys.readouterr()
    changed = tiny_config(tmp_path, tiny_model_dir, student__learning_rate=5e-4)
    assert main(["run", "--config", str(changed), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[teach] unchanged" in printed and "[train] running" in printed and "[export] running" in printed
    assert "[eval] running" in printed


def test_changed_teacher_config_keeps_the_old_teacher_output_aside(tmp_path, tiny_model_dir, capsys):
    """A teacher's logs are hours of CPU: a changed config starts the stage afresh but never deletes them."""
    out = tmp_path / "run"
    assert main(["teach", "--config", str(tiny_config(tmp_path, tiny_model_dir)), "--out", str(out)]) == 0
    before = sorted(p.relative_to(out / "teacher") for p in (out / "teacher").rglob("*") if p.is_file())
    changed = tiny_config(tmp_path, tiny_model_dir, teacher__samples=2)
    assert main(["teach", "--config", str(changed), "--out", str(out)]) == 0
    aside = list(out.glob("teacher.before-*"))
    assert len(aside) == 1 and before
    assert sorted(p.relative_to(aside[0]) for p in aside[0].rglob("*") if p.is_file()) == before
    assert (out / "teacher").is_dir() and "kept in" in capsys.readouterr().out


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["student"].update(learing_rate=1), "unknown key 'student.learing_rate' (did you mean 'student.learning_rate'?)"),
    (lambda c: c["student"].update(epochs="two"), "'student.epochs' must be float"),
    (lambda c: c["data"].update(train="/nope.jsonl"), "file not found: /nope.jsonl"),
    (lambda c: c["student"].update(method="qlora"), "'student.method' must be one of"),
    (lambda c: c["student"].update(stages=["sft", "ppo"]), "'student.stages' holds 'ppo'"),
    (lambda c: c["student"].update(online={"objective": "best"}), "'student.online.objective' must be one of"),
])
def test_bad_config_exits_2_with_key_and_line(tmp_path, tiny_model_dir, capsys, mutate, message):
    path = tiny_config(tmp_path, tiny_model_dir)
    config = yaml.safe_load(path.read_text())
    mutate(config)
    path.write_text(yaml.safe_dump(config))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}:" in err
    assert not (tmp_path / "run" / "report.json").exists()


def test_malformed_seed_line_names_file_and_line(tmp_path, tiny_model_dir, capsys):
    path = tiny_config(tmp_path, tiny_model_dir)
    seeds = tmp_path / "seeds.jsonl"
    lines = seeds.read_text().splitlines()
    lines[2] = '{"question": "broken'
    seeds.write_text("\n".join(lines) + "\n")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert f"{seeds}:3: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run" / "teacher" / "sft" / "train.jsonl").exists()


def test_missing_field_empty_dataset_and_missing_model(tmp_path, tiny_model_dir, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(empty)]) == 2
    assert "no questions in this file" in capsys.readouterr().err
    nofield = write_jsonl(tmp_path / "nofield.jsonl", [{"id": "a", "answer": "3"}])
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(nofield)]) == 2
    assert f"{nofield}:1: missing field 'question'" in capsys.readouterr().err
    data = write_jsonl(tmp_path / "ok.jsonl", QUESTIONS[:2])
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(data)]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing.gguf"), "--data", str(data)]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_eval_json_last_line(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
                                                 {"question": "What is 3 * 3?", "answer": 9}])
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--json", "--max-new-tokens", "8"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n"] == 2 and "pass@1" in last and len(last["ci95"]) == 2


def test_duplicate_question_id_names_both_lines(tmp_path, capsys):
    data = write_jsonl(tmp_path / "dup.jsonl", [QUESTIONS[0], QUESTIONS[1], dict(QUESTIONS[2], id="q0")])
    assert main(["eval", "--model", "smollm2-135m-instruct", "--data", str(data)]) == 2
    assert f"{data}:3: id 'q0' already used on line 1" in capsys.readouterr().err


def test_a_run_folder_names_the_model_it_serves(tmp_path, monkeypatch):
    """`serve --model runs/x` and `eval --model runs/x` take the GGUF the export chose, found from the run folder
    wherever the command is started; a run without a model says what to run; anything else passes through."""
    import json
    from edgedistill.rundir import served_by_run
    run = tmp_path / "runs" / "plant"
    (run / "export").mkdir(parents=True)
    (run / "export" / "student-Q5_K_M.gguf").write_bytes(b"GGUF")
    manifest = {"stages": {"train": {"status": "done"}, "export": {"status": "done", "outputs": {
        "gguf": "runs/plant/export/student-Q5_K_M.gguf", "quant": "Q5_K_M"}}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    assert served_by_run("runs/plant") == Path("runs/plant/export/student-Q5_K_M.gguf")
    monkeypatch.chdir(run)                      # the relative path no longer resolves: found in the run's export/
    assert served_by_run(run) == run / "export" / "student-Q5_K_M.gguf"
    assert served_by_run(tmp_path / "elsewhere.gguf") is None and served_by_run("qwen2.5-coder-0.5b-instruct") is None
    manifest["stages"]["export"]["status"] = "interrupted"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="no exported or trained model yet"):
        served_by_run(run)
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not a run manifest"):
        served_by_run(run)


def test_a_stage_key_holds_only_the_fields_changed_from_their_defaults(tmp_path, monkeypatch):
    """A field added later at its default must not change a finished run's keys; a changed field must."""
    import dataclasses
    from edgedistill.config import Config, ExportConfig, non_default
    from edgedistill.pipeline import stage_key
    from edgedistill.rundir import RunDir
    config = Config()
    assert non_default(config.export) == {} and config.changed("student") == {}
    run = RunDir(tmp_path)
    keys = {"train": "t"}
    before = stage_key("export", config, run, keys)
    changed = dataclasses.replace(config, export=dataclasses.replace(config.export, quant="Q8_0"))
    assert non_default(changed.export) == {"quant": "Q8_0"} and stage_key("export", changed, run, keys) != before
    # a field a later version adds, at its default: same key
    Later = dataclasses.make_dataclass("Later", [("new_knob", int, dataclasses.field(default=3))], bases=(ExportConfig,))
    later = dataclasses.replace(config, export=Later())
    assert stage_key("export", later, run, keys) == before
    assert stage_key("export", dataclasses.replace(config, export=Later(new_knob=4)), run, keys) != before
