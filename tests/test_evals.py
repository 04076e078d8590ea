"""Evaluation harness: pass@k estimator, answer checkers, benchmark loaders, calibration metrics, comparison report,
math-verify cross-check. Fast: a scripted generator stands in for models."""
import json
import re
from pathlib import Path

import pytest
import yaml

from edgedistill import UserError
from edgedistill.calibration import load_calibration
from edgedistill.checkers import extract_answer, is_correct
from edgedistill.cli import main
from edgedistill.config import Config, DataConfig, EvalConfig
from edgedistill.datasets import load_benchmark, split_slice
from edgedistill.metrics import (calibration_metrics, cross_fitted_confidence, evaluate, pass_at_k,
                                 sampled_scores)
from edgedistill.records import Question
from edgedistill.results import EvalResult, ResultRow
from edgedistill.rundir import RunDir
from edgedistill.evals.crosscheck import crosscheck, lm_eval_flexible, visible_answer

DATA = Path(__file__).parent / "data" / "evals"


# --- pass@k -----------------------------------------------------------------------------------------------------

def test_pass_at_k_edge_cases():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 0, 4) == 0.0          # nothing right
    assert pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 4, 4) == 1.0          # everything right
    assert pass_at_k(4, 1, 4) == 1.0                                         # k = n: any right sample counts
    for n, c in ((4, 1), (5, 2), (10, 7)):
        assert pass_at_k(n, c, 1) == pytest.approx(c / n)                    # k = 1 is the plain share
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)                   # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 4, 2) == 1.0                                         # n - c < k: cannot miss
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)                                                   # k > n
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)                                                   # c > n
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 0)


# --- checkers: right, wrong, malformed, missing, per answer type -------------------------------------------------

def q(answer, answer_type="number", options=None):
    return Question(id="x", question="?", answer=answer, answer_type=answer_type, options=options)


def test_number_checker():
    question = q("72")
    assert is_correct(extract_answer("Answer: <<48+24=72>>\nReason: x"), question)            # right
    assert is_correct(extract_answer("Answer: $72.00"), question)
    assert not is_correct(extract_answer("Answer: <<48+25=73>>"), question)                    # wrong
    assert extract_answer("Answer: <<48+=>>") is None                                          # malformed
    assert extract_answer("I cannot say") is None and not is_correct(None, question)           # missing
    assert is_correct("0.33", q("0.33")) and not is_correct("0.3", q("0.33"))                  # rounding


def test_choice_checker_with_lettered_options():
    question = q("D", "choice", ["A. partial discharge", "B. resistance", "C. oil debris", "D. current"])
    assert is_correct(extract_answer("Answer: D. current", "choice"), question)                # right
    assert is_correct(extract_answer("Answer: current", "choice"), question)                   # option text alone
    assert is_correct(extract_answer("D) current is most relevant", "choice"), question)       # no Answer line
    assert not is_correct(extract_answer("Answer: B", "choice"), question)                     # wrong
    assert not is_correct(extract_answer("Answer: F", "choice"), question)                     # malformed: no F
    assert not is_correct(extract_answer("", "choice"), question)                              # missing


def test_label_checker():
    question = q("Plugged / choked", "label", ["Leaking", "Plugged / choked", "Spurious stop"])
    assert is_correct(extract_answer("Answer: <<plugged/choked>>", "label"), question)         # right, odd wrapping
    assert not is_correct(extract_answer("Answer: Leaking", "label"), question)                # wrong
    assert not is_correct(extract_answer("Answer: Vibration", "label"), question)              # not in the set
    assert not is_correct(extract_answer("the filter", "label"), question)                     # missing line


def test_text_checker():
    question = q("Replace the seal", "text")
    assert is_correct(extract_answer("Answer: replace the seal.", "text"), question)
    assert not is_correct(extract_answer("Answer: tighten the bolt", "text"), question)
    assert not is_correct(extract_answer("Answer:", "text"), question)                         # malformed: empty
    assert not is_correct(None, question)


# --- loaders -------------------------------------------------------------------------------------------------------

def test_each_loader_on_its_fixture():
    gsm = load_benchmark(str(DATA / "gsm8k.jsonl"))
    assert [x.answer for x in gsm] == ["72", "10", "3600"] and gsm[0].answer_type == "number"
    svamp = load_benchmark(str(DATA / "svamp.json"))
    assert [x.answer for x in svamp] == ["51", "9.5", "5"]
    assert svamp[0].question.endswith("each pack. How much do you have to pay to buy each pack?")
    assert svamp[2].topic == "Common-Division"
    fsiq = load_benchmark(str(DATA / "fsiq.jsonl"))
    assert [x.answer for x in fsiq] == ["D", "A", "C"] and fsiq[0].options[3] == "D. current"
    assert fsiq[2].topic == "pump" and fsiq[0].answer_type == "choice"
    fmc = load_benchmark(str(DATA / "fmc" / "dev.txt"))
    assert [x.answer for x in fmc] == ["Plugged / choked", "Structural deficiency", "Spurious stop", "Leaking"]
    assert "leak at seal, replace" in fmc[3].question                        # commas inside the text survive
    assert "Overheating" in fmc[0].options and len(fmc[0].options) == 5      # labels of train.txt beside it
    generic = load_benchmark(str(DATA / "generic.csv"))
    assert generic[0].options == ["temperature", "vibration", "current"] and generic[1].answer == "24"
    assert load_benchmark(str(DATA / "gsm8k.jsonl"), fmt="jsonl", skip=1, limit=1)[0].answer == "10"


def test_slices_in_the_data_name():
    assert split_slice("train.jsonl[7273:]") == ("train.jsonl", slice(7273, None, None))
    assert split_slice("dev.jsonl[0:1800:6]") == ("dev.jsonl", slice(0, 1800, 6))
    assert split_slice("plain.jsonl") == ("plain.jsonl", None)
    assert [x.answer for x in load_benchmark(f"{DATA / 'svamp.json'}[::2]")] == ["51", "5"]


@pytest.mark.parametrize("name, text, where", [
    ("bad.jsonl", '{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": \n', r"bad\.jsonl:2: not valid JSON"),
    ("fsiq.jsonl", '{"question": "a?", "options": ["x", "y"], "option_ids": ["A", "B"], "correct": [true, false]}\n'
                   '{"question": "b?", "options": ["x", "y"], "option_ids": ["A", "B"], "correct": [true, true]}\n',
     r"fsiq\.jsonl:2: exactly one option must be correct"),
    ("dev.txt", "inefficient,Plugged / choked\n\nno label here\n", r"dev\.txt:3: expected 'work order text,label'"),
    ("svamp.json", '[{"Body": "a.", "Question": "b?", "Answer": 1},\n {"Body": "c.", "Question": "d?"}]',
     r"svamp\.json: item 2 .*'Answer' must be a number"),
    ("broken.json", '[{"Body": "a.",\n "Question": "b?" "Answer": 1}]', r"broken\.json:2: not valid JSON"),
    ("empty.jsonl", "\n", r"empty\.jsonl: no questions"),
])
def test_malformed_benchmark_file_names_the_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match=where):
        load_benchmark(str(path))


def test_malformed_benchmark_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "dev.txt"
    path.write_text("ok,Leaking\nbroken line\n")
    assert main(["eval", "--model", "x", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "dev.txt:2" in error and "Traceback" not in error
    assert main(["eval", "--model", "a", "--model", "b", "--shots", "1,2,3", "--data", str(path)]) == 2
    assert "--shots has 3 numbers for 2 models" in capsys.readouterr().err


# --- sampled scores, calibration, the report -----------------------------------------------------------------------

class ScriptedGenerator:
    """Answers "What is A+B?" greedily right when A is even, wrong when odd; of the 4 samples, A % 5 agree with the
    greedy answer (so agreement tracks correctness, as it should in a calibrated model)."""
    backend = "scripted"

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        texts, seen = [], {}
        for messages in conversations:
            a, b = map(int, re.findall(r"\d+", messages[-1]["content"])[:2])
            greedy = a + b if a % 2 == 0 else a + b + 1
            if sampling.temperature == 0:
                text = f"Answer: <<{a}+{b}=>>" if sampling.calculator else f"Answer: {greedy + 100}"
                texts.append(text if greedy == a + b else f"Answer: {greedy}")
            else:
                i = seen[a] = seen.get(a, -1) + 1
                texts.append(f"Answer: {greedy}" if i < a % 5 else "Answer: 999" if i % 2 else "no idea")
            if not sampling.stop_after_answer:
                texts[-1] += "\nReason: adding the two numbers gives the total, as the question asks."
        return texts


def arithmetic(n):
    return [Question(id=f"q{a}", question=f"What is {a}+{a + 3}?", answer=str(2 * a + 3), topic=f"t{a % 2}")
            for a in range(n)]


def write_arithmetic(path, n):
    path.write_text("".join(json.dumps({"question": x.question, "answer": x.answer, "topic": x.topic}) + "\n"
                            for x in arithmetic(n)))
    return path


def test_sampled_scores_returns_agreement_with_the_greedy_answer():
    questions = arithmetic(6)
    scores = sampled_scores(ScriptedGenerator(), questions, k=4)
    assert scores["greedy"] == [True, False, True, False, True, False]
    assert scores["agreement"] == [0, 1, 2, 3, 4, 0]          # a % 5 samples repeat the greedy answer
    assert scores["sample_correct"] == [0, 0, 2, 0, 4, 0]    # only even a's greedy answers are right
    assert scores["pass_at_k"] == pytest.approx(2.0) and scores["maj_at_k"] == 2


def test_calibration_metrics_are_cross_fitted():
    agreements, corrects = [4, 4, 0, 0, 4, 0, 4, 0], [True, True, False, False, True, False, True, False]
    confidences = cross_fitted_confidence(agreements, corrects, 4, 0.7)
    assert all(c > 0.6 for c, a in zip(confidences, agreements) if a == 4)
    assert all(c < 0.4 for c, a in zip(confidences, agreements) if a == 0)
    metrics = calibration_metrics(agreements, corrects, 4, 0.7)
    assert metrics["ece_raw"] == 0.0 and metrics["brier_raw"] == 0.0       # raw agreement is exact here
    assert 0 < metrics["ece"] < 0.4                                         # the prior keeps calibrated off 0/1


def test_sampled_scores_and_evaluate_take_keywords_only():
    with pytest.raises(TypeError):
        sampled_scores(ScriptedGenerator(), arithmetic(2), 4)
    with pytest.raises(TypeError):
        evaluate(ScriptedGenerator(), arithmetic(2), (), 4)


def test_evaluate_rows_topics_calculator_and_end():
    result = evaluate(ScriptedGenerator(), arithmetic(8), k=4, calculator_row=True, end_subset=4, label=None)
    assert result.pass_at_1 == 0.5 and result.ci95[0] < 0.5 < result.ci95[1]
    assert result.pass_at_1_no_calculator == 0.0                            # without it every sum is off
    assert result.topics == {"t0": {"n": 4, "pass@1": 1.0}, "t1": {"n": 4, "pass@1": 0.0}}
    assert result.to_the_end["pass@1_full_text"] == result.to_the_end["pass@1_at_delimiter"] == 0.5
    assert result.pass_at_k is not None and result.maj_at_k is not None and len(result.rows) == 8
    assert {"ece", "brier", "reliability"} <= set(result.figures)
    # its JSON form keeps the names stored results and reports have always had, and reads back the same
    stored = json.loads(json.dumps(result.to_dict()))
    assert {"pass@1", "pass@4", "maj@4", "ci95", "ece", "rows"} <= set(stored) and stored["rows"][0]["id"] == "q0"
    assert EvalResult.from_dict(stored).to_dict() == stored and EvalResult.from_dict(stored).rows == result.rows
    assert "rows" not in result.to_dict(rows=False)
    greedy_only = {key: value for key, value in stored.items() if not key.startswith(("pass@4", "maj@4"))} | {"k": 0}
    assert EvalResult.from_dict(greedy_only).to_dict() == greedy_only        # k 0 (greedy only) stays 0


def test_comparison_report_with_plots_and_calibration(tmp_path, monkeypatch, capsys):
    import edgedistill.generation
    monkeypatch.setattr(edgedistill.generation, "load_generator",
                        lambda spec, allow_network=False, backend="auto", threads=None: ScriptedGenerator())
    data = write_arithmetic(tmp_path / "sums.jsonl", 10)
    model = tmp_path / "student-model"
    model.mkdir()
    out = tmp_path / "report"
    assert main(["eval", "--model", str(model), "--model", "packaged-name", "--shots", "0,1", "--data", str(data),
                 "--out", str(out), "--calibrate", "--end-subset", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == ["student-model", "packaged-name"]
    assert report["results"][0]["pass@1"] == 0.5 and report["results"][1]["shots"] == 1
    for png in ("accuracy.png", "accuracy_by_topic.png", "reliability.png", "speed_vs_accuracy.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    text = (out / "report.md").read_text()
    assert "| student-model | scripted | 10 | **50.0%**" in text and "math-verify" in text and "![reliability]" in text
    calibration = load_calibration(model / "calibration.json")                 # where the app looks for it
    assert calibration.k == 4 and calibration.n == 10 and "ece_cross_fitted" in calibration.extra
    assert report["calibration"]["packaged-name"].startswith("skipped")
    assert "reusing" not in capsys.readouterr().out
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--end-subset", "4"]) == 0
    assert "reusing" in capsys.readouterr().out      # same model files (its calibration aside), data and settings
    (model / "model.safetensors").write_bytes(b"retrained")
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--end-subset", "4"]) == 0
    assert "reusing" not in capsys.readouterr().out                            # another model: decoded again


def test_the_eval_stage_scores_base_and_student_calibrates_what_is_served_and_reuses(tmp_path, monkeypatch, capsys):
    """evals.run.run, the pipeline's eval stage, on a run folder whose student is merged and not exported."""
    import edgedistill.generation
    from edgedistill.evals.run import run
    loaded = []
    monkeypatch.setattr(edgedistill.generation, "load_generator",
                        lambda spec, allow_network=False, backend="auto", threads=None:
                        loaded.append((spec, backend)) or ScriptedGenerator())
    data = write_arithmetic(tmp_path / "sums.jsonl", 10)
    dev = tmp_path / "dev.jsonl"          # other questions: the calibration is fitted here, never on the eval data
    dev.write_text("".join(json.dumps({"question": f"What is {a}+{a + 3}?", "answer": str(2 * a + 3)}) + "\n"
                           for a in range(20, 32)))
    config = Config(data=DataConfig(train=str(data), eval=str(data), dev=str(dev), eval_limit=8),
                    eval=EvalConfig(samples=4))
    rundir = RunDir(tmp_path / "run")
    rundir.student.merged.mkdir(parents=True)
    calibration_file = rundir.eval_dir / "calibration-student.json"
    assert run(config, rundir) == {"report": str(rundir.report_json),
                                   "calibration": {str(rundir.student.merged): str(calibration_file)}}
    assert loaded == [("smollm2-135m-instruct", "transformers"), (str(rundir.student.merged), "transformers"),
                      (str(rundir.student.merged), "transformers")]
    report = json.loads(rundir.report_json.read_text())
    assert report["base"]["shots"] == 2 and report["base"]["k"] == 1 and "pass@4" not in report["base"]
    assert report["student"]["n"] == 8 and report["student"]["pass@1"] == 0.5 and "pass@4" in report["student"]
    assert report["student"]["data"] == str(data) and report["student"]["backend"] == "scripted"
    calibration = load_calibration(calibration_file)       # the served model's, for the app, in the eval folder
    assert not (rundir.student.merged / "calibration.json").exists()
    assert calibration.n == 12 and calibration.data == str(dev)
    # dev: a in 20..31, greedy right for even a, a % 5 samples agree: 4 of 4 agreeing happens at a = 24 and 29 (one
    # right, one wrong), 3 of 4 at 23 and 28 (one each): no level is 90% right, so nothing is "likely right"
    assert calibration.likely_right_at is None and report["student"]["likely_right_coverage"] == 0.0
    assert json.loads((rundir.eval_dir / "base.json").read_text())["key"] == report["base"]["key"]
    assert "The student is **" in rundir.report_md.read_text()
    capsys.readouterr()
    run(config, rundir)                                                        # nothing changed: nothing decoded
    assert len(loaded) == 3 and capsys.readouterr().out.count("reusing") == 3


def test_dev_evaluation_is_the_one_evaluation():
    from edgedistill.student.dev import evaluate_dev
    questions = arithmetic(6)
    full = evaluate(ScriptedGenerator(), questions, k=4, label=None)
    assert evaluate_dev(ScriptedGenerator(), questions, k=4) == {"pass@1": full.pass_at_1, "maj@4": full.maj_at_k}
    assert evaluate_dev(ScriptedGenerator(), questions, k=1) == {"pass@1": 0.5}


def test_crosscheck_lists_disagreements():
    rows = [ResultRow(id="a", reference="360", predicted="360", correct=True, text="Answer: <<48*7.5=360>>\nReason: x"),
            ResultRow(id="b", reference="72", predicted="72", correct=True, text="Answer: $72.00"),
            ResultRow(id="c", reference="10", predicted="12", correct=False, text="Answer: 12"),
            ResultRow(id="d", reference="B", predicted="B", answer_type="choice", correct=True, text="Answer: B")]
    result = crosscheck(rows)
    assert result["n"] == 3 and result["ours_correct"] == 2 and result["math_verify_correct"] == 2
    assert [d["id"] for d in result["disagreements"]] == ["b"]               # lm-eval's exact match wants "72"
    assert result["disagreements"][0]["math_verify"] and not result["disagreements"][0]["lm_eval"]
    assert visible_answer("Answer: <<48*7.5=360>>") == "360" and lm_eval_flexible("so 1,200.", "1200")


def test_two_students_of_one_file_name_get_told_apart(tmp_path):
    """Two runs' exports share `student-Q4_K_M.gguf`: their labels (rows, cache files, paired test) must differ."""
    from edgedistill.evals.compare import model_labels
    specs = []
    for run in ("factory", "quickstart"):
        gguf = tmp_path / run / "export" / "student-Q4_K_M.gguf"
        gguf.parent.mkdir(parents=True)
        gguf.write_bytes(b"GGUF")
        specs.append(str(gguf))
    assert model_labels(specs) == ["factory/export/student-Q4_K_M.gguf", "quickstart/export/student-Q4_K_M.gguf"]
    assert model_labels([specs[0], "smollm2-135m-instruct"]) == ["student-Q4_K_M.gguf", "smollm2-135m-instruct"]


def test_the_confidence_is_fitted_on_dev_pooled_with_calibration_data_never_on_the_eval_data(tmp_path, monkeypatch):
    import edgedistill.generation
    from edgedistill.config import load_config
    from edgedistill.evals.run import run
    monkeypatch.setattr(edgedistill.generation, "load_generator",
                        lambda spec, allow_network=False, backend="auto", threads=None: ScriptedGenerator())
    data = write_arithmetic(tmp_path / "sums.jsonl", 10)
    dev, more = tmp_path / "dev.jsonl", tmp_path / "more.jsonl"
    for path, numbers in ((dev, range(20, 32)), (more, range(40, 70))):
        path.write_text("".join(json.dumps({"id": f"{path.stem}-{a}", "question": f"What is {a}+{a + 3}?",
                                            "answer": str(2 * a + 3)}) + "\n" for a in numbers))
    config = Config(data=DataConfig(train=str(data), eval=str(data), dev=str(dev), eval_limit=8),
                    eval=EvalConfig(samples=4, base=False, calibration_data=[str(more)]))
    rundir = RunDir(tmp_path / "run")
    rundir.student.merged.mkdir(parents=True)
    run(config, rundir)
    calibration = load_calibration(rundir.eval_dir / "calibration-student.json")
    assert calibration.n == 12 + 30 and calibration.data == f"{dev} + {more}"
    assert (rundir.eval_dir / "student-calibration-more_jsonl.json").is_file()
    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({"data": {"train": str(data), "eval": str(data), "dev": str(dev)},
                                       "eval": {"calibration_data": [str(data)]}}))
    with pytest.raises(UserError, match="fitted on other questions than it is judged on"):
        load_config(refused)
