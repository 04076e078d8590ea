"""Teacher stage in depth: step scores, preference pairs, selection, and the self-evolving rounds end to end."""
import json
import math

import pyarrow.parquet as pq
import pytest

from edgedistill.config import Config, SelectConfig
from edgedistill.records import Question
from edgedistill.teacher import distill
from edgedistill.teacher.pairs import build_pairs
from edgedistill.teacher.select import Contamination, looks_truncated, repetition, select
from edgedistill.teacher.steps import GroundingScorer, split_steps

PRESS = Question(id="p", question="A press makes 60 parts an hour. How many parts in 7 hours?", answer="420")


def test_grounding_scores_an_invented_quantity_and_a_wrong_sum_low():
    scorer = GroundingScorer()
    good, invented, wrong = scorer.score(PRESS, [
        "Answer: <<60*7=420>>\nReason: 60 parts an hour. Over 7 hours: <<60*7=420>> parts.",
        "Answer: <<60*8=480>>\nReason: 60 parts an hour. Over the shift: <<60*8=480>> parts.",
        "Answer: <<60*7=400>>\nReason: 60 parts an hour for 7 hours is <<60*7=400>> parts."])
    assert good["steps"] == [1.0, 1.0] and good["min"] == 1.0
    assert invented["steps"] == [1.0, 0.5] and invented["min"] == 0.5     # 8 is nowhere in the question
    assert wrong["min"] == 0.0                                          # 60*7 is not 400
    assert split_steps("Answer: 3\nReason: One. Two three.") == ["One.", "Two three."]
    plain_right, plain_wrong = scorer.score(PRESS, ["Answer: 420\nReason: 60 x 7 = 420 parts.",
                                                    "Answer: 400\nReason: 60 x 7 = 400 parts."])
    assert plain_right["min"] == 1.0 and plain_wrong["min"] == 0.0      # equations without the calculator count too


def test_judge_scorer_asks_per_step_with_the_steps_before_it():
    from edgedistill.teacher.steps import JudgeScorer

    class Judge:
        backend = "scripted"
        prompts = []

        def generate(self, conversations, sampling, batch_size=16, progress=None):
            self.prompts += [c[-1]["content"] for c in conversations]
            return ["No" if "480" in c[-1]["content"].split("Next step:")[1] else "Yes, it is" for c in conversations]

    judge = Judge()
    scores = JudgeScorer(judge).score(PRESS, ["Answer: 480\nReason: 60 an hour. So <<60*8=480>>.", "Answer: 1"])
    assert scores[0] == {"steps": [1.0, 0.0], "min": 0.0, "mean": 0.5}
    assert "Steps so far:\n60 an hour." in judge.prompts[1] and "Steps so far:\n(none)" in judge.prompts[0]
    assert scores[1]["steps"] == [1.0]                  # no Reason: the whole text is one step


def sample(id, correct, text, score, origin="teacher"):
    return {"id": id, "question_id": id.split("#")[0], "text": text, "verdict": {"correct": correct},
            "scores": {"min": score}, "origin": origin}


def test_pairs_chosen_verified_rejected_failed_negatives_first_length_balanced():
    questions = [Question(id=i, question=f"Q{i}?", answer="1") for i in "abcd"]
    samples = [
        sample("a#0", True, "x" * 100, 1.0), sample("a#1", True, "x" * 90, 0.5), sample("a#2", False, "y" * 95, 0.5),
        sample("a#n0", False, "z" * 300, 0.4, "negative"), sample("a#n1", False, "z" * 110, 0.4, "negative"),
        sample("b#0", True, "x" * 100, 0.2), sample("b#1", False, "y" * 100, 0.9),      # rejected scores higher
        sample("c#0", True, "x" * 100, 1.0), sample("c#1", False, "y" * 400, 0.0),      # lengths too far apart
        sample("d#0", False, "y" * 100, 0.0)]                                           # nothing verified
    pairs, report = build_pairs(questions, samples, margin=0.0, max_length_ratio=1.5)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("a#0", "a#n1")]
    assert report["dropped"] == {"no verified sample": 1, "no failed sample": 0, "margin": 1, "length": 1}
    by_id = {s["id"]: s for s in samples}
    for p in pairs:
        assert by_id[p["chosen_id"]]["verdict"]["correct"] and not by_id[p["rejected_id"]]["verdict"]["correct"]
        assert p["prompt"][-1] == {"role": "user", "content": "Qa?"}
    assert report["chosen_longer_share"] == 0.0 and report["rejected_from_negatives"] == 1


def candidate(i, question, text="Answer: 1\nReason: It is one.", pass_rate=1.0, tokens=10):
    return {"id": f"c{i}", "order": i, "question": question, "text": text, "rationale": "It is one.",
            "pass_rate": pass_rate, "tokens": tokens}


def test_quality_filters_and_decontamination_drop_a_planted_test_item():
    planted = "A conveyor moves 240 crates every hour between the press shop and the paint line of the plant."
    pool = [candidate(0, "How many bolts hold a flange?"),
            candidate(1, "Copied: " + planted.lower()),
            candidate(2, "Repeat?", text="Answer: 1\nReason: " + "the same words again " * 10),
            candidate(3, "Cut?", text="Answer: 1\nReason: The line makes"),
            {**candidate(4, "Unverified?"), "verified": False}]
    pool[3]["rationale"] = "The line makes"
    kept, report = select(pool, SelectConfig(), [planted], seed=0)
    assert [c["id"] for c in kept] == ["c0"]
    assert report["dropped_ids"] == {"contaminated": ["c1"], "repetitive": ["c2"], "truncated": ["c3"],
                                     "not verified": ["c4"]}
    assert repetition("a b c d a b c d") == pytest.approx(1 - 4 / 5) and looks_truncated("It is") and \
        not looks_truncated("<<2*3=6>>")
    assert Contamination(["How many parts?"], 13).hits("so how many parts? asked")     # short items match whole


def test_selection_respects_the_budget_covers_clusters_prefers_hard_and_is_deterministic(tmp_path):
    from edgedistill.models import embedder_folder
    topics = ["press output per hour", "conveyor belt speed", "paint line drying time", "bolt torque check"]
    pool = [candidate(i, f"Question {i} about {topics[i % 4]}?", pass_rate=(i % 5) / 4, tokens=10 + i)
            for i in range(40)]
    config = SelectConfig(budget=12, clusters=4)
    folder = embedder_folder("all-minilm-l6-v2")
    kept, report = select([dict(c) for c in pool], config, [], seed=3, embedder_folder=folder)
    again, _ = select([dict(c) for c in pool], config, [], seed=3, embedder_folder=folder)
    assert len(kept) == 12 and [c["id"] for c in kept] == [c["id"] for c in again]
    assert sorted(c["kept"] for c in report["clusters"]) == [3, 3, 3, 3]          # clusters take turns
    kept_ids = {c["id"] for c in kept}
    for cluster in {c["cluster"] for c in kept}:                                  # hardest first in each cluster
        members = [c for c in kept + [c for c in pool if c.get("cluster") == cluster] if c.get("cluster") == cluster]
        worst_kept = min(c["difficulty"] for c in members if c["id"] in kept_ids)
        assert all(c["difficulty"] <= worst_kept for c in members if c["id"] not in kept_ids)
    token_kept, _ = select([dict(c) for c in pool], SelectConfig(budget_tokens=100, clusters=4), [], 3, folder)
    assert sum(c["tokens"] for c in token_kept) <= 100


class ScriptedTeacher:
    """Stands in for a model: answers by a script keyed on the question and the kind of prompt."""
    backend = "scripted"

    def __init__(self, script):
        self.script, self.generated_tokens, self.prompts = script, 0, []

    def generate(self, conversations, sampling, batch_size=16, progress=None):
        out = []
        for i, messages in enumerate(conversations):
            self.prompts.append(messages)
            question = next(m["content"] for m in reversed(messages) if m["content"].startswith("Q"))
            correcting = messages[-1]["content"].startswith("That answer")
            out.append(self.script(question, correcting, i, sampling.temperature))
        return out


def test_model_teacher_majority_self_correction_negatives_and_outputs(tmp_path, tiny_model_dir):
    seeds = tmp_path / "plant.csv"
    seeds.write_text("question,answer\nQ1 press: 6 times 7?,42\nQ2 press: 5 times 5?,25\nQ3 no reference: 2 times 3?,\n")

    def teacher_script(question, correcting, i, temperature):
        if question.startswith("Q2") and not correcting:                           # always wrong first
            return "Answer: <<5*6=30>>\nReason: Five times six is <<5*6=30>>." if i % 2 else "I do not know."
        if question.startswith("Q3"):
            return "Answer: <<2*3=6>>\nReason: <<2*3=6>>." if i % 4 != 3 else "Answer: 5\nReason: A guess."
        a, b = {"Q1": (6, 7), "Q2": (5, 5)}[question[:2]]
        return f"Answer: <<{a}*{b}={a * b}>>\nReason: {a} times {b} is <<{a}*{b}={a * b}>>."

    def weak_script(question, correcting, i, temperature):
        return "Answer: <<6*8=48>>\nReason: Six times eight is <<6*8=48>>."

    teachers = {"big": ScriptedTeacher(teacher_script), "weak": ScriptedTeacher(weak_script)}
    load = lambda spec, *a, **k: teachers[spec]   # noqa: E731  (stands in for load_generator)
    config = Config()
    config.data.train, config.data.eval, config.data.train_limit = str(seeds), "shopfloor:dev", None
    config.teacher.kind, config.teacher.model, config.teacher.negatives_model = "model", "big", "weak"
    config.teacher.samples, config.teacher.batch_size = 4, 2
    config.teacher.backend = "transformers"       # named, so the scripted teachers' names are not resolved
    out = tmp_path / "teacher"
    summary = distill.run_teacher(config, out, load=load)
    samples = {s["id"]: s for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    assert samples["plant-4#0"]["verdict"]["reference_source"] == "majority"
    assert samples["plant-4#0"]["verdict"]["agreement"] == 0.75 and not samples["plant-4#3"]["verdict"]["correct"]
    assert samples["plant-2#0"]["verdict"]["reference_source"] == "gold"
    # Q2 failed 4 of 4: a correction round showed the wrong answer back, and it recovered
    assert {k for k in samples if k.startswith("plant-3#c")} == {f"plant-3#c{k}" for k in range(4)}
    assert all(samples[f"plant-3#c{k}"]["verdict"]["correct"] for k in range(4))
    assert samples["plant-3#c0"]["origin"] == "self-correction"
    assert any("That answer (30) is wrong" in m[-1]["content"] for m in teachers["big"].prompts)
    assert any("That answer (none given) is wrong" in m[-1]["content"] for m in teachers["big"].prompts)
    assert not any(k.startswith("plant-2#c") for k in samples)          # Q1 was right: no correction round
    assert samples["plant-2#n0"]["origin"] == "negative" and samples["plant-2#n0"]["teacher"]["model"] == "weak"
    assert samples["plant-2#0"]["teacher"]["prompt_sha256"] and samples["plant-2#0"]["teacher"]["seed"] is not None
    assert summary["kept"] == 3 and summary["pairs"] == 3
    sft = [json.loads(line) for line in (out / "sft" / "train.jsonl").read_text().splitlines()]
    assert [r["pass_rate"] for r in sft] == [1.0, 0.0, 0.75]
    rationale_first = (out / "sft" / "rationale_first.jsonl").read_text().splitlines()
    assert json.loads(rationale_first[0])["completion"][0]["content"].startswith("Reason: 6 times 7")
    (parquet,) = (out / "dataset" / "preferences").glob("*.parquet")
    table = pq.read_table(parquet).to_pylist()
    # Q3's negative is too long beside its short chosen answer: the teacher's own wrong sample stands in
    assert {r["rejected_id"] for r in table} == {"plant-2#n0", "plant-3#n0", "plant-4#3"}
    datasets = pytest.importorskip("datasets")       # what TRL's trainers load with
    loaded = datasets.load_dataset(str(out / "dataset"), "preferences")["train"]
    assert loaded.num_rows == 3 and loaded[0]["prompt"][-1]["role"] == "user"
    assert datasets.load_dataset(str(out / "dataset"), "sft")["train"]["pass_rate"] == [1.0, 0.0, 0.75]
    trl_trains_one_step_on(out / "dataset", tiny_model_dir, tmp_path)
    card = (out / "dataset" / "README.md").read_text()
    assert "config_name: sft_rationale_first" in card and "1 by majority vote" in card
    assert json.loads((out / "summary.json").read_text())["self_corrected"] == 1
    # A rerun regenerates nothing: every round finds its ids written
    before = (out / "samples.jsonl").read_text()
    teachers["big"].prompts.clear()
    distill.run_teacher(config, out, load=load)
    assert (out / "samples.jsonl").read_text() == before and teachers["big"].prompts == []


def trl_trains_one_step_on(dataset_folder, model_dir, tmp_path):
    """TRL's own trainers take the datasets folder as it is: DPO starts at log 2 (policy = reference), SFT runs."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    common = {"output_dir": str(tmp_path / "trl"), "max_steps": 1, "per_device_train_batch_size": 3,
              "report_to": "none", "logging_steps": 1, "save_strategy": "no", "bf16": False, "use_cpu": True}
    dpo = trl.DPOTrainer(model=str(model_dir), args=trl.DPOConfig(**common),
                         train_dataset=datasets.load_dataset(str(dataset_folder), "preferences")["train"])
    assert dpo.train().training_loss == pytest.approx(math.log(2), abs=1e-5)
    sft = trl.SFTTrainer(model=str(model_dir), args=trl.SFTConfig(**common),
                         train_dataset=datasets.load_dataset(str(dataset_folder), "sft")["train"])
    assert math.isfinite(sft.train().training_loss)


def test_same_seed_same_data_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_model_dir):
    from tests.test_pipeline import QUESTIONS, write_jsonl
    data = write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS[:6])
    config = Config()
    config.data.train, config.data.eval, config.data.train_limit = str(data), str(data), None
    config.teacher.kind, config.teacher.model = "model", str(tiny_model_dir)
    config.teacher.samples, config.teacher.batch_size, config.teacher.max_new_tokens = 2, 2, 12
    config.teacher.self_correct = False
    distill.run_teacher(config, tmp_path / "a")
    distill.run_teacher(config, tmp_path / "b")
    a = (tmp_path / "a" / "samples.jsonl").read_text()
    assert a == (tmp_path / "b" / "samples.jsonl").read_text()
    lines = a.splitlines(keepends=True)
    resumed = tmp_path / "c"
    resumed.mkdir()
    (resumed / "samples.jsonl").write_text("".join(lines[:5]) + lines[5][:20])   # killed mid-chunk, torn line
    distill.run_teacher(config, resumed)
    assert (resumed / "samples.jsonl").read_text() == a


def test_small_gguf_teachers_sample_on_transformers_large_ones_on_llama_cpp(tiny_model_dir, tmp_path):
    assert distill.sampling_backend("smollm2-135m-instruct") == "transformers"       # 100 MiB GGUF
    assert distill.sampling_backend(str(tiny_model_dir)) == "auto"                   # an HF folder: as is
    assert distill.sampling_backend("smollm2-135m-instruct", "llama.cpp") == "llama.cpp"
    assert distill.sampling_backend("http://127.0.0.1:1/v1") == "auto"
