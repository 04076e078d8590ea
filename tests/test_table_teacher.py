"""The teacher's questions about the plant's tables: by rule (verified by running each query), and written or
reworded by a model teacher (kept only when the majority of its solves return the question's rows; resumable)."""
from __future__ import annotations

import csv
import re
import json

import pytest

from edgedistill.checkers import canonical
from edgedistill.config import TableTeachConfig
from edgedistill.records import Question
from edgedistill.rundir import TableTeachFiles
from edgedistill.table_queries import fill_for, result_text
from edgedistill.tables import call, open_tables
from edgedistill.teacher.table_questions import TEMPLATES, rule_questions
from edgedistill.teacher.table_teacher import checked, parse_reworded, parse_written, run_table_teacher

RIGHT = "SELECT rpn FROM fmea WHERE component ILIKE 'cap chute'"


@pytest.fixture
def tool(tmp_path):
    with (tmp_path / "fmea.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FMEA ID", "Equipment", "Component", "Severity", "RPN"])
        for i, (equipment, component, severity, rpn) in enumerate([
                ("Capper", "Cap chute", 5, 60), ("Capper", "Spindle bearing", 8, 192), ("Filler", "Product pump", 7, 126),
                ("Filler", "Level probe", 6, 90), ("Labeller", "Glue roller", 4, 48), ("Labeller", "Label sensor", 5, 75)]):
            writer.writerow([f"FM-{i + 1:03d}", equipment, component, severity, rpn])
    tables = open_tables([tmp_path / "fmea.csv"])
    yield tables
    tables.close()


def test_rule_questions_are_verified_by_running_their_queries(tool):
    questions = rule_questions(tool, seed=1, count=40, wordings=("train", "heldout"))
    assert len(questions) >= 20 and len({q.question.lower() for q in questions}) == len(questions)
    for q in questions:
        assert q.answer == result_text(call(tool, q.query)), q     # the answer is what its query returns
    kinds = {q.topic.split("/")[0] for q in questions}
    assert {"lookup", "count", "top"} <= kinds
    assert any(q.answer == "not in the tables" for q in questions if q.topic.startswith("absent"))
    again = rule_questions(tool, seed=1, count=40, wordings=("train", "heldout"))
    assert [q.question for q in again] == [q.question for q in questions]      # deterministic for a seed


def test_train_and_heldout_wordings_do_not_overlap():
    for kind, pools in TEMPLATES.items():
        assert not set(pools["train"]) & set(pools["heldout"]), kind


def test_a_written_question_and_its_sql_are_parsed():
    assert parse_written(" What is the RPN of the cap chute?\nSQL: SELECT rpn\n FROM fmea;\n\nmore") == \
        ("What is the RPN of the cap chute?", "SELECT rpn FROM fmea")
    assert parse_written("What is it?\nno sql") is None
    assert parse_written("Tell me?\nSQL: DROP TABLE fmea") is None
    # what the packaged 1.5B wrote: chatter, then the label; only the question is kept
    said = "Sure, here is a different question:\nQuestion: How many parts are out of stock?\nSQL: SELECT 1"
    assert parse_written(said) == ("How many parts are out of stock?", "SELECT 1")
    assert parse_reworded("Question: Which technician closed WO-1147?") == "Which technician closed WO-1147?"
    assert parse_reworded("Sure! Here's how an engineer might type it:\n\"Total minutes for February 2025?\"") == \
        "Total minutes for February 2025?"


class ScriptedTeacher:
    """Writes one question with the right SQL, one without SQL, rewordings, and solves that always query RIGHT
    (the tool's rows filled in, as the decoding loop would)."""
    backend, generated_tokens = "scripted", 0

    def __init__(self, tool):
        self.tool, self.calls = tool, []

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        self.calls.append(len(conversations))
        out = []
        for i, messages in enumerate(conversations):
            prompt = messages[-1]["content"]
            if "Tables:" in messages[0]["content"]:                     # a solve
                text = f"Answer: [[{RIGHT} =>"
                out.append(text + fill_for(text, self.tool))
            elif "Rewrite this question" in prompt:
                out.append("tell me please: " + prompt.split("Question: ")[1].split("\n")[0])
            else:
                out.append(f"What RPN does the cap chute carry?\nSQL: {RIGHT}" if i % 2 == 0 else "no idea")
        return out


def test_the_model_teacher_keeps_what_its_solves_confirm_and_resumes(tool, tmp_path):
    cap = Question(id="s1", question="What is the RPN of Cap chute?", answer="60", answer_type="rows", query=RIGHT)
    pump = Question(id="s2", question="What is the RPN of Product pump?", answer="126", answer_type="rows",
                    query="SELECT rpn FROM fmea WHERE component ILIKE 'product pump'")
    cfg = TableTeachConfig(written=2, rewordings=1, solves=3, model="scripted", batch_size=4)
    files = TableTeachFiles(tmp_path / "tables")
    teacher = ScriptedTeacher(tool)
    kept = run_table_teacher(cfg, tool, [cap, pump], files, teacher, "scripted")
    texts = sorted(q.question for q in kept)
    # the written question (its SQL returns 60, so do its solves) and the cap chute's rewording are kept; the pump's
    # rewording is not: its solves return 60, not 126
    assert texts == ["What RPN does the cap chute carry?", "tell me please: What is the RPN of Cap chute?"]
    assert all(canonical(q.answer, q) == "60" and q.source.startswith("teacher.tables") for q in kept)
    faults = [json.loads(line).get("fault") for line in files.proposals.read_text().splitlines()]
    assert "not a question and its SQL" in faults
    # resumed: everything is in the logs, so the teacher is asked nothing more
    again = ScriptedTeacher(tool)
    assert sorted(q.question for q in run_table_teacher(cfg, tool, [cap, pump], files, again, "scripted")) == texts
    assert again.calls == []


def test_the_teacher_stage_writes_rule_questions_for_the_configured_tables(tool, tmp_path, capsys):
    from edgedistill.cli import main
    table = tool.tables[0].source
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: shopfloor:train, train_limit: 3}}\nknowledge: {{tables: [{table}]}}\n"
                      f"teacher: {{kind: dataset, tables: {{rule_questions: 12}}}}\n")
    assert main(["teach", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    rule = [json.loads(line) for line in (tmp_path / "run/teacher/tables/rule.jsonl").read_text().splitlines()]
    assert len(rule) == 12 and all(r["id"].startswith("tables-") and r["query"] for r in rule)
    sft = [json.loads(line) for line in (tmp_path / "run/teacher/sft/train.jsonl").read_text().splitlines()]
    tables = [r for r in sft if "[[" in r["completion"][0]["content"]]
    assert len(tables) == 12 and all("fmea(fmea_id text" in r["prompt"][0]["content"] for r in tables)
    assert len(sft) == 15
    config.write_text("knowledge: {tables: []}\nteacher: {tables: {rule_questions: 5}}\n")
    assert main(["teach", "--config", str(config), "--out", str(tmp_path / "run2")]) == 2
    assert "'knowledge.tables' names none" in capsys.readouterr().err


def test_beside_the_shipped_plant_rule_questions_are_about_your_own_tables(tool):
    from edgedistill.teacher.distill import rule_tables
    own = str(tool.tables[0].source)
    both = open_tables(["plant", own, "plant_practice"])
    try:
        assert rule_tables(both, ["plant", own]) == ["fmea_2"]      # the user's file alone (named apart from plant's)
        assert set(rule_tables(both, ["plant"])) == {"fmea", "maintenance_log", "downtime_log", "spare_parts"}
    finally:
        both.close()


def test_a_sheet_past_the_row_limit_still_has_its_key_and_groupings(tmp_path):
    """The tool's list of distinct values stops at its row limit (200): the key is counted by the engine instead,
    and a 300-row sheet's 16 failure modes still group rows."""
    from edgedistill.teacher.table_questions import roles_of
    modes = [f"Mode {i}" for i in range(16)]
    with (tmp_path / "pfmea.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Line ID", "Failure Mode", "RPN"])
        writer.writerows([f"L-{i:03d}", modes[i % 16], i % 50 + 1] for i in range(300))
    sheet = open_tables([tmp_path / "pfmea.csv"])
    try:
        roles = roles_of(sheet, sheet.tables[0])
        assert roles.keys == ["line_id"] and list(roles.categories) == ["failure_mode"]
        asked = rule_questions(sheet, seed=0, count=30)
        assert any(q.topic.startswith("lookup") and "line_id ILIKE" in q.query for q in asked)
    finally:
        sheet.close()


def test_a_big_sheet_without_a_key_is_asked_lookups_by_three_columns_of_one_row(tmp_path):
    """A 300-row PFMEA names a row by step, failure mode and cause: its lookups say all three, and each names one
    row that exists; a small table is asked no such question (the shipped splits stay as they were)."""
    steps, modes, causes = [f"Step {i}" for i in range(6)], [f"Mode {i}" for i in range(10)], \
        [f"Cause {i}" for i in range(7)]
    with (tmp_path / "pfmea.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Process Step", "Failure Mode", "Potential Cause(s)", "RPN"])
        writer.writerows([steps[i % 6], modes[i % 10], causes[i % 7], i] for i in range(300))
    sheet = open_tables([tmp_path / "pfmea.csv"])
    try:
        asked = [q for q in rule_questions(sheet, seed=0, count=60) if q.topic.startswith("lookup3")]
        assert len(asked) >= 3
        for q in asked:
            assert q.query.count(" ILIKE ") == 3 and q.answer.count(";") == 0
            assert all(v.lower() in q.question.lower() for v in re.findall(r"ILIKE '([^']+)'", q.query))
    finally:
        sheet.close()
    assert not any(q.topic.startswith("lookup3") for q in rule_questions(open_tables(["plant"]), seed=0, count=200))


def test_questions_say_the_word_where_a_header_is_an_abbreviation(tmp_path):
    """A PFMEA's SEV column is asked about as "severity": the query keeps the column, the question the word."""
    with (tmp_path / "pfmea.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Step", "SEV", "OCC"])
        writer.writerows([["Injection", 7, 3], ["Injection", 5, 2], ["Cooling", 4, 6], ["Cooling", 8, 1]])
    sheet = open_tables([tmp_path / "pfmea.csv"])
    try:
        asked = [q for q in rule_questions(sheet, seed=0, count=30) if "sev" in q.query or "occ" in q.query]
        assert asked and all(" sev " not in f" {q.question.lower()} " for q in asked)
        assert any("severity" in q.question.lower() or "occurrence" in q.question.lower() for q in asked)
    finally:
        sheet.close()


def test_a_written_query_whose_rows_are_empty_values_is_dropped(tool):
    """A query that returns a row of nulls "returns rows" but answers nothing (the 1.5B's kept 'null' answer)."""
    row = checked({"id": "w", "kind": "written"}, "Which RPN has the chute?\nSQL: SELECT NULL AS rpn FROM fmea LIMIT 1", tool, {})
    assert row["fault"] == "its rows are empty values (null)"
    row = checked({"id": "w", "kind": "written"}, "Which RPN has the chute?\nSQL: " + RIGHT, tool, {})
    assert row["fault"] is None and row["answer"] == "60"
