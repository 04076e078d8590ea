"""Fixes from the hostile-input probe (issue 16): files never cut, configs and flags checked against their ranges,
data lines and paths that end in one clear error line (exit code 2), never a traceback."""
from __future__ import annotations

import json

import pytest
import yaml

from edgedistill import UserError
from edgedistill.cli import main
from edgedistill.config import ServeConfig, StudentConfig, load_config
from edgedistill.records import AppendLog, load_questions


# 1. The feedback log never cuts a file that is not its own, and never drops a whole last record.

def test_append_log_refuses_a_binary_file_and_leaves_it_whole(tmp_path):
    model = tmp_path / "student.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 8 + b"\nno newline at the end \xff\x00")
    before = model.read_bytes()
    with pytest.raises(UserError, match="not a JSONL file"):
        AppendLog(model, key="id")
    assert model.read_bytes() == before


def test_append_log_keeps_a_last_line_without_newline(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"id": "a", "question": "q1", "answer": "1"}\n{"id": "b", "question": "q2", "answer": "2"}')
    log = AppendLog(seeds, key="id")
    assert log.done() == {"a", "b"}
    log.append([{"id": "c", "question": "q3", "answer": "3"}])
    assert [q.id for q in load_questions(seeds)] == ["a", "b", "c"]


def test_append_log_moves_a_torn_tail_aside_instead_of_deleting_it(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"id": "a"}\n{"id": "b", "text": "cut off mid-wr')
    log = AppendLog(samples, key="id")
    assert log.done() == {"a"}
    assert samples.read_text() == '{"id": "a"}\n'
    assert (tmp_path / "samples.jsonl.torn").read_text() == '{"id": "b", "text": "cut off mid-wr\n'
    assert "cut off mid-write" in capsys.readouterr().err


def test_append_log_refuses_a_text_file_that_is_not_jsonl(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    with pytest.raises(UserError, match="not a JSONL file"):
        AppendLog(notes, key="id")
    assert notes.read_text() == "line one\nline two\n"


# 4 and 6. Every config value is checked against its range when the config is built, naming the key.

def write_config(tmp_path, body: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("section,key,value,says", [
    ("student", "epochs", -1, "more than 0.0"),
    ("student", "lora_layers_fraction", 2.0, "at most 1.0"),
    ("student", "max_length", 1, "2 or more"),
    ("student", "batch_size", 0, "1 or more"),
    ("student", "accumulation", 0, "1 or more"),
    ("student", "checkpoint_every", 0, "1 or more"),
    ("student", "lora_r", 0, "1 or more"),
    ("student", "learning_rate", float("nan"), "more than 0.0"),
    ("data", "train_limit", 0, "leave it out"),
    ("teacher", "samples", -3, "1 or more"),
    ("serve", "port", 0, "1 or more"),
    ("export", "min_agreement", 1.5, "at most 1.0"),
])
def test_config_value_out_of_range_names_key_line_and_range(tmp_path, section, key, value, says):
    path = write_config(tmp_path, {section: {key: value}})
    with pytest.raises(UserError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"'{section}.{key}'" in message and says in message and f"{path}:2" in message


def test_config_out_of_range_from_code_and_flags_is_refused_too():
    with pytest.raises(UserError, match="'serve.concurrency' must be 1 or more"):
        ServeConfig(concurrency=0)
    with pytest.raises(UserError, match="'student.stages' holds 'magic'"):
        StudentConfig(stages=["sft", "magic"])


def test_config_not_utf8_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("student:\n  model: caf\xe9\n".encode("latin-1"))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgedistill: error:") and "not UTF-8" in err and "\n" not in err


@pytest.mark.parametrize("flags,says", [
    (["--limit", "0"], "--limit: must be 1 or more"),
    (["--shots", "-1"], "--shots takes a number from 0 to 64"),
    (["--batch-size", "0"], "--batch-size: must be 1 or more"),
    (["--temperature", "nan"], "--temperature: must be 0.0 or more and at most 10.0"),
])
def test_eval_flags_out_of_range_exit_2_before_any_model_loads(tmp_path, capsys, flags, says):
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", "shopfloor:dev", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1


def test_serve_flags_are_validated_like_the_config(tmp_path, capsys):
    # the flag takes its range from serve.concurrency's field, and says so in the config's words
    assert main(["serve", "--model", str(tmp_path / "x.gguf"), "--concurrency", "0"]) == 2
    assert "--concurrency: must be 1 or more" in capsys.readouterr().err


# 6. Data lines that used to escape as tracebacks.

@pytest.mark.parametrize("line,says", [
    ('{"question": "q", "answer": ' + "9" * 5000 + "}", "not usable JSON"),
    ("[" * 100000 + "]" * 100000, "not usable JSON"),
    ('{"question": "How many?", "answer": "1", "answer_expr": "48*"}', "'answer_expr' is not one the calculator"),
    ('{"question": "q", "answer": "1", "rationale": ["a", "list"]}', "'rationale' must be a string"),
    ('{"question": "q", "answer": {"nested": 1}}', "'answer' must be a string or a number"),
])
def test_data_line_errors_name_file_and_line(tmp_path, line, says):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"question": "fine", "answer": "2"}\n' + line + "\n")
    with pytest.raises(UserError) as caught:
        load_questions(path)
    assert f"{path}:2" in str(caught.value) and says in str(caught.value)


# 6. --out that cannot be a folder: one line, exit 2, before any stage starts.

def test_out_naming_a_file_or_a_path_under_a_file_is_refused(tmp_path, capsys):
    a_file = tmp_path / "report.md"
    a_file.write_text("keep me")
    config = write_config(tmp_path, {"data": {"train_limit": 2}})
    for out, says in ((a_file, "is a file, not a folder"), (a_file / "sub", "is a file, so no folder")):
        assert main(["run", "--config", str(config), "--out", str(out)]) == 2
        assert says in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--model", "n", "--data", "shopfloor:dev", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_out_in_a_folder_that_cannot_be_written_is_refused():
    from edgedistill.rundir import writable_folder
    with pytest.raises(UserError, match="cannot write there"):
        writable_folder("/proc/edgedistill-run")   # refused even as root, unlike a chmod-ed folder


def test_preflight_catches_a_bad_data_line_before_any_stage(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n{"question": "q2"\n')
    config = write_config(tmp_path, {"data": {"train": str(data), "eval": str(data), "dev": str(data)}})
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"{data}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_clear_error_is_a_single_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("student:\n  model: [unclosed\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid YAML" in err
    assert json.dumps(err)   # printable


def test_a_path_too_long_for_the_system_is_not_found_not_a_traceback(tmp_path):
    """Found by the long fuzz profile: Path.is_file raised ENAMETOOLONG for a 300-character file name."""
    path = write_config(tmp_path, {"data": {"train": "x" * 300}})
    with pytest.raises(UserError, match="'data.train' file not found"):
        load_config(path)
    with pytest.raises(UserError, match="no such file"):
        load_questions("y" * 300)
