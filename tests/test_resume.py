"""kill -9 during the teacher stage or during training, then rerun: nothing finished is redone."""
import json
import os
import signal
import subprocess
import sys
import time

import yaml

from tests.test_pipeline import QUESTIONS, write_jsonl


def start_run(config, out, command="run"):
    return subprocess.Popen([sys.executable, "-m", "edgedistill.cli", command, "--config", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(proc, condition, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError("the run finished before it could be killed:\n" + proc.stdout.read()[-2000:])
        time.sleep(0.02)
    raise AssertionError("condition never met")


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_kill_during_teacher_then_resume_regenerates_no_finished_record(tmp_path, tiny_model_dir):
    questions = [dict(q, id=f"q{i}-{j}", question=f"{q['question']} ({i})") for i in range(6)
                 for j, q in enumerate(QUESTIONS)]
    data = write_jsonl(tmp_path / "seeds.jsonl", questions)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": str(data), "eval": str(data), "train_limit": None, "eval_limit": 4},
        "teacher": {"kind": "model", "model": str(tiny_model_dir), "samples": 2, "batch_size": 1, "max_new_tokens": 24,
                    "self_correct": False},
        "student": {"model": str(tiny_model_dir), "epochs": 1, "batch_size": 8},
        "eval": {"batch_size": 4, "max_new_tokens": 8, "base": False}}))
    out = tmp_path / "run"
    samples = out / "teacher" / "samples.jsonl"
    kill_when(start_run(config, out, "teach"), lambda: len(lines(samples)) >= 6)
    before = lines(samples)
    assert 6 <= len(before) < 2 * len(questions)
    rerun = subprocess.run([sys.executable, "-m", "edgedistill.cli", "teach", "--config", str(config), "--out", str(out)],
                           capture_output=True, text=True, timeout=600)
    # a random tiny teacher gets nothing right, so the stage ends with its clear "nothing verified" error (exit 2)
    assert rerun.returncode == 2 and "the teacher verified no sample" in rerun.stderr, rerun.stderr[-2000:]
    assert "teacher: resuming" in rerun.stdout
    after = lines(samples)
    complete_before = [line for line in before if line.endswith("}")]
    assert after[:len(complete_before)] == complete_before        # finished records kept as written
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == len(set(ids)) == 2 * len(questions)        # none regenerated, none missing


def test_kill_during_training_then_resume_repeats_at_most_one_interval(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": str(data), "eval": str(data), "train_limit": None},
        "teacher": {"select": {"decontaminate_eval": False}},
        "student": {"model": str(tiny_model_dir), "epochs": 40, "batch_size": 2, "checkpoint_every": 5},
        "eval": {"batch_size": 4, "max_new_tokens": 8, "base": False}}))
    out = tmp_path / "run"
    log = out / "student" / "sft" / "train_log.jsonl"
    kill_when(start_run(config, out), lambda: len(lines(log)) >= 23)
    killed_at = max(json.loads(line)["step"] for line in lines(log) if line.endswith("}"))
    rerun = subprocess.run([sys.executable, "-m", "edgedistill.cli", "run", "--config", str(config), "--out", str(out)],
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "[teach] unchanged since the last run: skipped" in rerun.stdout
    resumed_at = int(rerun.stdout.split("resuming at step ")[1].split()[0].rstrip(")"))
    assert resumed_at % 5 == 0 and killed_at - 5 <= resumed_at <= killed_at
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done" and manifest["stages"]["eval"]["status"] == "done"
