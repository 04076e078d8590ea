"""Hostile inputs to the eval: one question too long for the model's context must not stop the benchmark. It is
skipped before decoding, named by its file and line, and counted in the result and the reports; only a benchmark
whose every question is too long is an error."""
import json
import re

import pytest

from edgedistill import UserError
from edgedistill.cli import main
from edgedistill.config import EvalConfig
from edgedistill.datasets import load_benchmark
from edgedistill.metrics import evaluate
from edgedistill.records import Question
from edgedistill.evals.compare import compare

from tests.test_evals import DATA

LONG = "The press line stopped for a jammed die and started again. " * 20     # 220 "tokens" below


class ContextLimitedGenerator:
    """A llama.cpp stand-in: a word is a token, 128 tokens per row, and a batch with one prompt too long for it is
    refused as llama.cpp's backend refuses it. Answers "What is A+B?" right."""
    backend = "scripted"
    context_per_row = 128

    def prompt_ids(self, messages):
        return list(range(len(" ".join(m["content"] for m in messages).split())))

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        for i, messages in enumerate(conversations):
            tokens = len(self.prompt_ids(messages))
            if tokens + sampling.max_new_tokens > self.context_per_row:
                raise UserError(f"prompt {i} has {tokens} tokens; with {sampling.max_new_tokens} new tokens it "
                                f"exceeds the {self.context_per_row}-token context per row")
        texts = []
        for messages in conversations:
            a, b = map(int, re.findall(r"\d+", messages[-1]["content"])[-2:])
            text = f"Answer: {a + b}"
            texts.append(text if sampling.stop_after_answer else text + "\nReason: the two numbers added up.")
        return texts


def write_sums(path, long_lines=(3,), n=5):
    """A JSONL benchmark of n sums; the questions on `long_lines` (1-based) carry a 220-word preamble."""
    rows = [{"id": f"sum-{a}", "question": (LONG if a + 1 in long_lines else "") + f"What is {a}+{a + 3}?",
             "answer": str(2 * a + 3)} for a in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_over_long_question_is_skipped_named_by_file_and_line_and_counted(tmp_path, capsys):
    data = write_sums(tmp_path / "sums.jsonl")
    result = evaluate(ContextLimitedGenerator(), load_benchmark(str(data)), k=2, calculator_row=True, label=None)
    assert result.n == 4 and result.pass_at_1 == 1.0 and len(result.rows) == 4
    assert result.skipped == 1
    assert result.skipped_questions == [{"id": "sum-2", "where": f"{data}:3", "prompt_tokens": 231}]
    assert "sum-2" not in [row.id for row in result.rows]
    err = capsys.readouterr().err
    assert "skipped 1 of 5 questions" in err and f"{data}:3 (id sum-2): 231 prompt tokens" in err


def test_the_quick_eval_command_skips_the_question_and_finishes(tmp_path, monkeypatch, capsys):
    import edgedistill.generation
    monkeypatch.setattr(edgedistill.generation, "load_generator", lambda *a, **k: ContextLimitedGenerator())
    data = write_sums(tmp_path / "sums.jsonl", long_lines=(1, 4))
    assert main(["eval", "--model", "stand-in", "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert "n=3" in captured.out
    assert f"{data}:1 (id sum-0)" in captured.err and f"{data}:4 (id sum-3)" in captured.err
    result = evaluate(ContextLimitedGenerator(), load_benchmark(str(data)), k=1, label="eval")
    assert result.n == 3 and result.skipped == 2
    assert [s["where"] for s in result.skipped_questions] == [f"{data}:1", f"{data}:4"]


def test_the_comparison_report_lists_the_skipped_question(tmp_path, monkeypatch, capsys):
    import edgedistill.generation
    monkeypatch.setattr(edgedistill.generation, "load_generator", lambda *a, **k: ContextLimitedGenerator())
    data = write_sums(tmp_path / "sums.jsonl")
    report = compare(["stand-in"], [str(data)], tmp_path / "report",
                     EvalConfig(samples=2, calculator_row=True, end_subset=2, calibrate=False))
    assert report["results"][0]["skipped"] == 1 and report["results"][0]["n"] == 4
    assert report["results"][0]["skipped_questions"][0]["where"] == f"{data}:3"
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| stand-in | scripted | 4 (1 skipped) |" in text
    assert f"`{data}:3` (id sum-2): 231 prompt tokens" in text
    assert "1 questions skipped (too long)" in capsys.readouterr().out


def test_to_the_end_leaves_out_a_question_that_fits_only_the_answer(tmp_path):
    """With 48 new tokens the 90-word question fits; decoded to the end (256 new tokens) it does not."""
    questions = [Question(id="long", question="word " * 70 + "What is 1+4?", answer="5"),
                 Question(id="short", question="What is 2+5?", answer="7")]
    generator = ContextLimitedGenerator()
    generator.context_per_row = 300
    result = evaluate(generator, questions, k=1, calculator_row=True, end_subset=2, end_tokens=256, label=None)
    assert result.n == 2 and result.skipped == 0
    assert result.to_the_end["n"] == 1 and result.to_the_end["skipped"] == 1
    assert result.to_the_end["pass@1_at_delimiter"] == 1.0


def test_every_question_too_long_is_one_clear_error(tmp_path):
    data = write_sums(tmp_path / "sums.jsonl", long_lines=(1, 2, 3), n=3)
    with pytest.raises(UserError, match=r"all 3 questions are too long for the model's 128-token context with 48 "
                                        rf"new tokens \(the shortest prompt, {re.escape(str(data))}:1, has 231 "
                                        r"tokens\): use fewer shots"):
        evaluate(ContextLimitedGenerator(), load_benchmark(str(data)), k=1, calculator_row=True, label=None)


def test_each_loader_keeps_where_its_questions_came_from(tmp_path):
    gsm = load_benchmark(str(DATA / "gsm8k.jsonl"))
    assert gsm.where == [f"{DATA / 'gsm8k.jsonl'}:{n}" for n in (1, 2, 3)]
    assert load_benchmark(str(DATA / "gsm8k.jsonl"), skip=1, limit=1).where == [f"{DATA / 'gsm8k.jsonl'}:2"]
    assert load_benchmark(str(DATA / "svamp.json")).where[1] == f"{DATA / 'svamp.json'}: item 2"
    assert load_benchmark(f"{DATA / 'svamp.json'}[::2]").where == [f"{DATA / 'svamp.json'}: item {n}" for n in (1, 3)]
    assert load_benchmark(str(DATA / "fsiq.jsonl")).where[2] == f"{DATA / 'fsiq.jsonl'}:3"
    fmc = load_benchmark(str(DATA / "fmc" / "dev.txt"))
    assert len(fmc.where) == len(fmc) and all(w.startswith(f"{DATA / 'fmc' / 'dev.txt'}:") for w in fmc.where)
    sheet = tmp_path / "plant.csv"
    sheet.write_text("question,answer\nWhat is 1+1?,2\n\nWhat is 2+2?,4\n")
    assert load_benchmark(str(sheet)).where == [f"{sheet}:2", f"{sheet}:4"]      # the blank row is not counted


def test_a_transformers_model_skips_a_prompt_past_its_position_limit(tmp_path, tiny_model_dir, capsys):
    """The tiny Llama has 1024 positions; a 1100-token question is skipped, the short one is decoded."""
    from edgedistill.generation.transformers import TransformersGenerator
    from edgedistill.models import load_model
    model, tokenizer = load_model(str(tiny_model_dir))
    data = tmp_path / "two.jsonl"
    data.write_text(json.dumps({"id": "huge", "question": "pump " * 1100 + "What is 1+1?", "answer": "2"}) + "\n"
                    + json.dumps({"id": "small", "question": "What is 1+1?", "answer": "2"}) + "\n")
    result = evaluate(TransformersGenerator(model, tokenizer), load_benchmark(str(data)), k=1, max_new_tokens=4,
                      label="eval")
    assert result.n == 1 and [row.id for row in result.rows] == ["small"]
    skipped = result.skipped_questions[0]
    assert skipped["where"] == f"{data}:1" and skipped["prompt_tokens"] > 1024
    assert "1024-token context" in capsys.readouterr().err
