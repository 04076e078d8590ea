"""Slow: the whole loop on the real packaged SmolLM2-135M with a micro config, then a rerun that skips."""
import json
import subprocess
import sys

import pytest
import yaml

from edgedistill.config import ExportConfig

pytestmark = pytest.mark.slow

MICRO = {"data": {"train": "shopfloor:train", "eval": "shopfloor:dev", "train_limit": 16, "eval_limit": 8},
         "teacher": {"kind": "dataset"},
         "student": {"model": "smollm2-135m-instruct", "epochs": 1, "batch_size": 8, "checkpoint_every": 1},
         # ONNX int8 (every int4 setting fails the gate at 135M); a gate of 0.8 because 2 training steps on 16
         # examples make a plumbing test, not a quality one (the quickstart student's Q4_K_M agrees 91.8%)
         "export": {"onnx": "int8", "min_agreement": 0.8, "parity_eval": 4},
         "eval": {"batch_size": 8, "base": True, "calibration_questions": 8}}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill.cli", *args], capture_output=True, text=True,
                          timeout=900)


def test_micro_run_on_packaged_model(tmp_path):
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(MICRO))
    out = tmp_path / "run"
    first = run_cli("run", "--config", str(config), "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"base", "student", "seconds", "artifacts"} <= set(report)
    for name in ("base", "student"):
        assert report[name]["n"] == 8 and set(report[name]) >= {"pass@1", "ci95", "n"}
    assert set(report["seconds"]) == {"teach", "train", "export", "eval"}
    # the GGUF evaluated and served is the one the serving bar chose (Q4_K_M preferred; 2 training steps leave a
    # student whose Q4_K_M may not hold 98% agreement, and then Q8_0 serves)
    exported = json.loads((out / "manifest.json").read_text())["stages"]["export"]["outputs"]
    q4 = exported["parity"]["GGUF Q4_K_M"]
    bar = ExportConfig()        # the serving bar's defaults: the test follows them, not a copy of them
    holds = q4["agreement"] >= bar.serve_min_agreement and q4["kl"] <= bar.serve_max_kl and q4["template_ok"]
    served = "Q4_K_M" if holds else "Q8_0"
    assert exported["quant"] == served and exported["preferred_quant"] == "Q4_K_M"
    assert report["gguf"]["n"] == 8 and report["artifacts"]["gguf"].endswith(f"student-{served}.gguf")
    assert f"{served} serve" in report["served_file"]
    assert report["onnx"]["n"] == 8 and (out / "export" / "onnx" / "parity.json").exists()
    # the app's confidence: the served GGUF is sampled and calibrated, the ONNX scored greedy only
    # in the eval stage's folder, named in the manifest, where the app finds it for the run's model
    calibration = json.loads((out / "eval" / "calibration-gguf.json").read_text())
    assert not list((out / "export").glob("*.calibration.json")) and (out / "eval" / "runners.md").is_file()
    from edgedistill.calibration import calibration_of
    assert calibration_of(out / "export" / f"student-{served}.gguf") == out / "eval" / "calibration-gguf.json"
    assert calibration["n"] == 8 and len(calibration["accuracy"]) == calibration["k"] + 1 == 5
    assert calibration["data"] == "shopfloor:dev" and "likely_right_at" in calibration   # fitted on dev
    assert {"likely_right_coverage", "likely_right_precision", "likely_right_at"} <= set(report["gguf"])
    assert "pass@4" in report["gguf"] and not (out / "export" / "onnx" / "calibration.json").exists()
    parity = (out / "export" / "parity.md").read_text()
    assert "| GGUF Q4_K_M |" in parity and "| ONNX int8 |" in parity
    merged = out / "student" / "merged"
    assert report["artifacts"]["student"].endswith("student/merged") and (merged / "model.safetensors").exists()

    # the student loads and answers, through the public eval command, with a JSON last line
    answered = run_cli("eval", "--model", str(merged), "--data", "shopfloor:dev", "--limit", "2", "--json")
    assert answered.returncode == 0, answered.stderr[-3000:]
    result = json.loads(answered.stdout.strip().splitlines()[-1])
    assert result["n"] == 2

    # the served GGUF, named by the run folder, reloads on llama.cpp and answers, with the calculator
    answered = run_cli("eval", "--model", str(out), "--data", "shopfloor:dev", "--limit", "2", "--json")
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert json.loads(answered.stdout.strip().splitlines()[-1])["n"] == 2

    second = run_cli("run", "--config", str(config), "--out", str(out))
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("unchanged since the last run: skipped") == 4
