"""The self-generation round: new questions written, solved, verified, rewritten answer-first, cleaned and
multiplied; resumable after a kill. A scripted teacher stands in for the model (the real one is hours on 2 cores)."""
from __future__ import annotations

import json
import random

import pytest

from edgedistill.calculator import evaluate, numbers_match
from edgedistill.config import Config, ConfigValueError, EvolveConfig
from edgedistill.expressions import Template, inline_annotations, question_numbers, substitute
from edgedistill.records import load_questions
from edgedistill.teacher import distill
from edgedistill.teacher.evolve import planned

SEEDS = [
    {"id": "s1", "question": "The milling centre makes 90 flanges per hour. How many flanges does it make in 7 "
                             "hours?", "answer": "630", "answer_expr": "90*7", "topic": "throughput",
     "rationale": "At 90 parts an hour for 7 hours, the output is <<90*7=630>> parts."},
    {"id": "s2", "question": "A crate holds 45 flanges. How many crates are needed for 630 flanges?",
     "answer": "14", "answer_expr": "630/45", "topic": "packing",
     "rationale": "630 flanges at 45 a crate fill <<630/45=14>> crates."},
    {"id": "s3", "question": "Press 2 stamps 120 brackets an hour and 6 of every 100 are scrapped. How many good "
                             "brackets does it stamp in an 8-hour shift?", "answer": "902.4",
     "answer_expr": "120*8*(100-6)/100", "topic": "scrap",
     "rationale": "It stamps <<120*8=960>> brackets, and <<100-6=94>> percent are good: <<960*94/100=902.4>>."},
]


# ---------------------------------------------------------------- expressions: inline, template, substitute

def test_inlining_replaces_earlier_results_with_the_expressions_that_made_them():
    question = "A line makes 90 parts an hour for 7 hours; 25 are scrapped. How many good parts?"
    reasoning = "It makes <<90*7=630>> parts. Less scrap: <<630-25=605>> good parts."
    assert inline_annotations(reasoning, "605", question) == "90*7-25"
    # a result that is not the answer, or a number the question never shows, gives no expression
    assert inline_annotations(reasoning, "606", question) is None
    assert inline_annotations("<<90*8=720>> then <<720-25=695>>", "695", question) is None


def test_inlining_wraps_a_rounded_answer_in_the_seed_rounding_pattern():
    question = "Availability 96%, performance 79%, quality 96%. OEE to 1 decimal place?"
    reasoning = "OEE is <<96*79*96/10000=72.8064>> percent, so 72.8."
    expression = inline_annotations(reasoning, "72.8", question)
    assert expression == "round(96*79*96/10000*10)/10" and numbers_match("72.8", evaluate(expression))


def test_inlining_leaves_an_answer_bare_when_the_question_asks_for_no_rounding():
    """0.7407 is how 40/5400*100 was printed, not a rounding the question asked for: no round() for the student
    to copy (the 1.5B teacher's first run put one in 14% of its kept records)."""
    question = "A batch of 5400 nuts had 40 scrapped. What is the scrap rate in percent?"
    reasoning = "Scrap rate = <<40/5400*100=0.7407>>%"
    assert inline_annotations(reasoning, "0.7407", question) == "40/5400*100"


def test_question_numbers_read_digits_separators_and_words():
    assert question_numbers("twelve crates of 1,200 bolts, forty-five a box, half a shift, 7.50 h") == \
        {"12", "1200", "45", "0.5", "7.5"}


def test_template_refills_numbers_and_recomputes_answer_and_reasoning():
    seed = SEEDS[2]
    template = Template.of(seed["question"], seed["answer_expr"], seed["answer"])
    assert [s.text for s in template.slots] == ["120", "6", "8"] and template.slots[1].percent is False
    rng = random.Random(0)
    for _ in range(20):
        question, expression, answer, mapping = template.instantiate(rng)
        assert numbers_match(answer, evaluate(expression)) and question != seed["question"]
        assert all(n in question_numbers(question) for n in mapping.values())
        reasoning = substitute(seed["rationale"], mapping)
        values = [float(v) for v in __import__("re").findall(r"=([\d.]+)>>", reasoning)]
        assert numbers_match(answer, values[-1])        # the carried-over reasoning reaches the new answer


def test_template_refuses_a_question_that_shows_a_slot_number_twice():
    assert Template.of("Line 7 runs 7 hours at 90 an hour. Output?", "90*7", "630") is None
    assert Template.of("No numbers here?", "90*7", "630") is None


# ---------------------------------------------------------------- config

def test_evolve_needs_a_model_and_counts_per_seed_plan_the_proposals():
    with pytest.raises(ConfigValueError, match="teacher.evolve"):
        Config(teacher=__import__("edgedistill.config", fromlist=["TeacherConfig"]).TeacherConfig(
            evolve=EvolveConfig(rewordings=1.0)))
    plan = planned(load_rows_as_questions(), EvolveConfig(rewordings=1.0, variations=0.5, compositions=2.0))
    assert [pid for pid, _, _ in plan] == ["s1~r0", "s1~c0", "s1~c1", "s2~r0", "s2~v0", "s2~c0", "s2~c1",
                                           "s3~r0", "s3~c0", "s3~c1"]   # 0.5: every other seed


def load_rows_as_questions():
    from edgedistill.records import Question
    return [Question(**{k: v for k, v in row.items()}) for row in SEEDS]


# ---------------------------------------------------------------- the round with a scripted teacher

class EvolvingTeacher:
    """Writes a rewording, a variation and a composition per seed and solves questions by a script; counts calls."""
    backend = "scripted"

    def __init__(self, fail_after: int | None = None):
        self.generated_tokens, self.calls, self.fail_after = 0, 0, fail_after

    def generate(self, conversations, sampling, batch_size=16, progress=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        out = [self.reply(m[-1]["content"]) for m in conversations]
        self.generated_tokens += sum(len(t.split()) for t in out)
        return out

    @staticmethod
    def reply(prompt: str) -> str:
        if prompt.startswith("Rewrite"):
            if "milling centre" in prompt:
                return "hey, my mill does 90 flanges an hour - how many after 7 hrs?"
            if "crate holds" in prompt:      # a near-copy: dropped before any solve
                return "A crate holds 45 flanges. How many crates are needed for 630 flanges?"
            return "Shift log: press 2, 120 brackets/h, 6 in 100 scrapped, 8 h shift. Good brackets?"
        if prompt.startswith("Question 1:"):
            return "Question: A mill makes 90 flanges an hour for 7 hours, packed 45 a crate. Crates?\n" \
                   "Expression: 90*7/45"
        if prompt.startswith("Question:"):
            return "Question: The lathe makes 80 shafts per hour. How many shafts in 6 hours?\nExpression: 80*6"
        # solves
        if "80 shafts" in prompt:
            return "It makes <<80*6=480>> shafts.\nAnswer: 480"
        if "packed 45" in prompt:
            return "It makes <<90*7=630>> flanges, so <<630/45=14>> crates.\nAnswer: 14"
        if "mill does 90" in prompt:
            return "90 an hour for 7 hours is <<90*7=630>> flanges.\nAnswer: 630"
        if "Shift log" in prompt:   # the teacher gets this one wrong: rejected with the majority
            return "<<120*8=960>> made, <<960-6=954>> good.\nAnswer: 954"
        return "Answer: 1"


def evolve_config(tmp_path, seeds_file):
    config = Config()
    config.data.train, config.data.eval, config.data.dev = str(seeds_file), "shopfloor:heldout", "shopfloor:dev"
    config.teacher.backend = "transformers"
    config.teacher.evolve = EvolveConfig(model="teacher", rewordings=1.0, variations=1.0, compositions=1.0,
                                         instances=3, batch_size=2, duplicate_similarity=1.0)
    return config


@pytest.fixture
def seeds_file(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SEEDS))
    return path


def test_round_keeps_verified_questions_with_provenance_and_logs_rejections(tmp_path, seeds_file):
    config = evolve_config(tmp_path, seeds_file)
    teacher = EvolvingTeacher()
    out = tmp_path / "teacher"
    distill.run_teacher(config, out, load=lambda *a, **k: teacher)
    kept = [json.loads(line) for line in (out / "evolve" / "kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "evolve" / "rejected.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in kept}
    reword = by_id["s1~r0"]
    assert reword["answer"] == "630" and reword["answer_expr"] == "90*7"
    assert reword["provenance"]["kind"] == "reword" and reword["provenance"]["seed_id"] == "s1"
    assert reword["provenance"]["agreement"] == 1.0 and len(reword["provenance"]["prompt_sha256"]) == 16
    assert by_id["s1~c0"]["answer_expr"] == "90*7/45" and by_id["s1~c0"]["answer"] == "14"
    reasons = {r["id"]: r["rejected"] for r in rejected}
    assert reasons["s2~r0"] == "near-copy of its seed"
    assert "is not its seed's answer 902.4" in reasons["s3~r0"]
    instances = [r for r in kept if "template_of" in r["provenance"]]
    assert instances and all(numbers_match(r["answer"], evaluate(r["answer_expr"])) for r in instances)
    # the kept questions reach the SFT data answer-first
    sft = [json.loads(line) for line in (out / "sft" / "train.jsonl").read_text().splitlines()]
    s1 = next(r for r in sft if r["id"] == "s1~r0#0")
    assert s1["completion"][0]["content"].startswith("Answer: <<90*7=630>>\nReason: 90 an hour")
    summary = json.loads((out / "evolve" / "summary.json").read_text())
    assert summary["written"] == {"reword": 3, "vary": 3, "compose": 3}
    assert summary["rewordings_reaching_seed_answer"]["solved"] == 2


def test_round_resumes_after_a_kill_without_rewriting_anything(tmp_path, seeds_file):
    config = evolve_config(tmp_path, seeds_file)
    out = tmp_path / "teacher"
    with pytest.raises(KeyboardInterrupt):
        distill.run_teacher(config, out, load=lambda *a, **k: EvolvingTeacher(fail_after=3))
    before = (out / "evolve" / "proposals.jsonl").read_text()
    resumed = EvolvingTeacher()
    distill.run_teacher(config, out, load=lambda *a, **k: resumed)
    after = (out / "evolve" / "proposals.jsonl").read_text()
    assert after.startswith(before) and len(after.splitlines()) == 9
    ids = [json.loads(line)["id"] for line in (out / "evolve" / "solves.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))                      # nothing solved twice
    whole, uninterrupted = tmp_path / "whole", EvolvingTeacher()
    distill.run_teacher(config, whole, load=lambda *a, **k: uninterrupted)
    assert (whole / "evolve" / "kept.jsonl").read_text() == (out / "evolve" / "kept.jsonl").read_text()
    assert resumed.calls + 3 == uninterrupted.calls      # the 3 calls before the kill were not made again


def test_new_questions_that_share_a_run_with_heldout_are_dropped(tmp_path, seeds_file):
    config = evolve_config(tmp_path, seeds_file)
    heldout = load_questions("shopfloor:heldout")[0]
    value = __import__("edgedistill.calculator", fromlist=["format_number"]).format_number(
        evaluate(heldout.answer_expr))

    class Copier(EvolvingTeacher):   # every variation it writes is a held-out question, rightly solved
        @staticmethod
        def reply(prompt):
            if prompt.startswith("Question:"):
                return f"Question: {heldout.question}\nExpression: {heldout.answer_expr}"
            if prompt == heldout.question:
                return f"It is <<{heldout.answer_expr}={value}>>.\nAnswer: {value}"
            return EvolvingTeacher.reply(prompt)
    out = tmp_path / "teacher"
    distill.run_teacher(config, out, load=lambda *a, **k: Copier())
    rejected = [json.loads(line) for line in (out / "evolve" / "rejected.jsonl").read_text().splitlines()]
    assert [r["rejected"] for r in rejected if r["id"] == "s1~v0"] == \
        ["shares a 8-word run with a dev or held-out question"]
    assert heldout.question not in (out / "evolve" / "kept.jsonl").read_text()


# ---------------------------------------------------------------- the model teacher reasons first

def test_model_teacher_is_asked_to_reason_first_and_its_samples_are_rewritten_answer_first(tmp_path):
    seeds = tmp_path / "plant.jsonl"
    seeds.write_text(json.dumps({"id": "a", "question": "Q a line makes 90 parts an hour for 7 hours; 25 are "
                                 "scrapped. Good parts?", "answer": "605"}) + "\n" +
                     json.dumps({"id": "b", "question": "Q a crate holds 45 flanges. Crates for 630?",
                                 "answer": "14"}) + "\n")

    class Reasoner:
        backend, generated_tokens = "scripted", 0

        def __init__(self):
            self.prompts = []

        def generate(self, conversations, sampling, batch_size=16, progress=None):
            self.prompts += conversations
            return ["Reason: It makes <<90*7=630>> parts, less scrap <<630-25=605>>.\nAnswer: 605"
                    if "90 parts" in m[-1]["content"] else
                    "Reason: 630 over 45 is 14 crates.\nAnswer: 14"          # right, but no annotation to inline
                    for m in conversations]
    teacher = Reasoner()
    config = Config()
    config.data.train, config.data.eval = str(seeds), "shopfloor:dev"
    config.teacher.kind, config.teacher.model, config.teacher.backend = "model", "big", "transformers"
    config.teacher.samples, config.teacher.self_correct = 2, False
    out = tmp_path / "teacher"
    summary = distill.run_teacher(config, out, load=lambda *a, **k: teacher)
    assert teacher.prompts[0][0]["content"].startswith("Write 'Reason:' first")
    logged = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert logged[0]["text"].startswith("Reason:") and logged[0]["format"] == "rationale-first"   # as written
    sft = [json.loads(line) for line in (out / "sft" / "train.jsonl").read_text().splitlines()]
    assert [r["completion"][0]["content"] for r in sft] == \
        ["Answer: <<90*7-25=605>>\nReason: It makes <<90*7=630>> parts, less scrap <<630-25=605>>."]
    assert json.loads((out / "summary.json").read_text())["verified_not_rewritten_answer_first"] == 2
    assert summary["kept"] == 1


# ---------------------------------------------------------------- checks before any solve

def test_pre_solve_checks_name_what_is_wrong():
    from edgedistill.teacher.evolve import needed_numbers, parse_proposal
    seed = load_rows_as_questions()[2]            # 120 brackets an hour, 6 of every 100 scrapped, 8-hour shift
    assert needed_numbers(seed) == ["120", "6", "8"]
    assert parse_proposal("reword", seed, "Press 2: 120/h, 6 in 100 bad. Good ones in 8 hours?", 0.8) == \
        {"question": "Press 2: 120/h, 6 in 100 bad. Good ones in 8 hours?", "reference": "902.4"}
    assert parse_proposal("reword", seed, "Press 2: 120/h, 6 in 100 bad. Good ones per shift?", 0.8)["rejected"] \
        == "lost the seed's number(s) ['8']"
    assert parse_proposal("reword", seed, "120/h, 6 in 100 bad, 8 h: 902.4 good, right?", 0.8)["rejected"] == \
        "shows its own answer"
    assert parse_proposal("reword", seed, "Press 2: 120/h, 6 in 100 bad, 8 h; is it 450 good ones?", 0.8)[
        "rejected"] == "adds numbers its seed does not have ['450']"
    assert parse_proposal("reword", seed, "Press 2 makes 120 an hour, 6 in 100 are scrap, 8 hours.", 0.8)[
        "rejected"] == "not a question (asks nothing)"
    assert parse_proposal("compose", seed, "Question: A press makes 90 an hour. In 7 hours?\nExpression: 90*7",
                          0.8)["rejected"] == "not two steps (one operation)"
    assert "does not show" in parse_proposal("vary", seed, "Question: A press makes 90 an hour. In 7 hours?\n"
                                                           "Expression: 95*7", 0.8)["rejected"]
    assert parse_proposal("vary", seed, "Question: A press makes 90 an hour. In 7 hours?\nExpression: 90*7 "
                                        "(one arithmetic expression)", 0.8)["reference"] == "630"


def test_drawn_numbers_keep_their_kind_order_and_percent_range():
    from edgedistill.expressions import Slot, draw_like, same_order
    rng = random.Random(3)
    percent = Slot("96", 0, 2, 0, False, True)
    decimal = Slot("7.5", 0, 3, 1, False, False)
    round_hundreds = Slot("1200", 0, 4, 0, False, False)
    for _ in range(200):
        assert 1 <= float(draw_like(percent, rng)) <= 99
        drawn = draw_like(decimal, rng)
        assert "." not in drawn or len(drawn.split(".")[1]) == 1
        assert float(draw_like(round_hundreds, rng)) % 100 == 0
    assert same_order(["40", "25"], ["50", "30"]) and not same_order(["40", "25"], ["30", "50"])


def test_a_check_added_later_applies_to_proposals_already_written(tmp_path, seeds_file):
    config = evolve_config(tmp_path, seeds_file)
    config.teacher.evolve.variations = config.teacher.evolve.compositions = 0.0
    out = tmp_path / "teacher"
    (out / "evolve").mkdir(parents=True)
    # written by an older version, whose checks let a statement with a made-up number through
    (out / "evolve" / "proposals.jsonl").write_text(json.dumps(
        {"id": "s1~r0", "seed_id": "s1", "kind": "reword", "question": "The mill makes 90 flanges an hour, so 7 "
         "hours is 635 flanges.", "reference": "630", "text": "The mill makes 90 flanges an hour, so 7 hours is 635 "
         "flanges.", "teacher": {"model": "old", "prompt_sha256": "0" * 16}}) + "\n")
    teacher = EvolvingTeacher()
    distill.run_teacher(config, out, load=lambda *a, **k: teacher)
    rejected = {json.loads(line)["id"]: json.loads(line)["rejected"]
                for line in (out / "evolve" / "rejected.jsonl").read_text().splitlines()}
    assert rejected["s1~r0"] == "not a question (asks nothing)"
    solves = (out / "evolve" / "solves.jsonl").read_text()
    assert "s1~r0#" not in solves and "s3~r0#0" in solves          # the old one fails today's checks: no solves


# ---------------------------------------------------------------- work-order lines (labels)

class WorkOrderTeacher:
    """Rewrites work-order lines and labels them by a script."""
    backend = "scripted"

    def __init__(self):
        self.generated_tokens, self.prompts = 0, []

    def generate(self, conversations, sampling, batch_size=16, progress=None):
        self.prompts += conversations
        return [self.reply(m) for m in conversations]

    @staticmethod
    def reply(messages) -> str:
        prompt = messages[-1]["content"]
        if prompt.startswith("Rewrite"):
            line = prompt.rsplit("Line: ", 1)[1]
            return {"pump seal weeping": "pmp seal lkg", "conveyor belt torn": "conveyor belt torn.",
                    "motor will not start": "mtr wont start", "hose burst": "hyd hose u/s"}[line]
        line = prompt.removeprefix("Work order: ")
        label = {"pmp seal lkg": "Leaking", "mtr wont start": "Failure to start on demand",
                 "hyd hose u/s": "Breakdown"}.get(line, "Other")
        return f"The line reads as a {label.lower()} fault.\nAnswer: {label}"


def test_work_order_lines_are_reworded_kept_by_label_majority_and_kept_away_from_dev(tmp_path):
    from edgedistill.datasets import work_order_question
    labels = ["Breakdown", "Failure to start on demand", "Leaking", "Other", "Structural deficiency"]
    seeds = [work_order_question(line, labels, id=f"wo{i}", answer=label) for i, (line, label) in enumerate(
        [("pump seal weeping", "Leaking"), ("conveyor belt torn", "Structural deficiency"),
         ("motor will not start", "Failure to start on demand"), ("hose burst", "Leaking")])]
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps({k: v for k, v in vars(q).items() if v is not None}) + "\n" for q in seeds))
    dev.write_text(json.dumps(vars(work_order_question("mtr wont start!", labels, id="d1", answer="Failure to start "
                                                                                                     "on demand"))) + "\n")
    config = Config()
    config.data.train, config.data.eval, config.data.dev = str(train), "shopfloor:heldout", str(dev)
    config.teacher.backend = "transformers"
    config.teacher.evolve = EvolveConfig(model="teacher", rewordings=1.0, batch_size=2, duplicate_similarity=1.0)
    teacher = WorkOrderTeacher()
    out = tmp_path / "teacher"
    distill.run_teacher(config, out, load=lambda *a, **k: teacher)
    kept = {r["id"]: r for r in map(json.loads, (out / "evolve" / "kept.jsonl").read_text().splitlines())}
    reasons = {r["id"]: r["rejected"] for r in map(json.loads, (out / "evolve" / "rejected.jsonl").read_text().splitlines())}
    assert set(kept) == {"wo0~r0"}
    assert kept["wo0~r0"]["question"] == work_order_question("pmp seal lkg", labels).question
    assert kept["wo0~r0"]["answer"] == "Leaking" and kept["wo0~r0"]["options"] == labels
    assert reasons["wo1~r0"] == "near-copy of its seed"
    assert reasons["wo2~r0"] == "equal or close to a dev or held-out work-order line"
    assert "is not its seed's label Leaking" in reasons["wo3~r0"]
    # the label set is in the solve's system turn, so a batch prefills it once
    solve = next(m for m in teacher.prompts if m[-1]["content"] == "Work order: pmp seal lkg")
    assert "Structural deficiency" in solve[0]["content"]
    # other train lines with their labels are its worked examples; its own seed's line and label are not
    shown = [m["content"] for m in solve[1:-1]]
    assert "Work order: hose burst" in shown and "Answer: Leaking" in shown
    assert "Work order: pump seal weeping" not in shown
    sft = [json.loads(line) for line in (out / "sft" / "train.jsonl").read_text().splitlines()]
    assert next(r for r in sft if r["id"].startswith("wo0~r0"))["completion"][0]["content"] == \
        "Answer: Leaking\nReason: The line reads as a leaking fault."
