"""The plant's tables as a tool: loading spreadsheets, the two locks, the `[[query => rows]]` annotation, the
rule-written questions, and the decoding loop filling in rows."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edgedistill import UserError
from edgedistill.checkers import extract_answer, is_correct
from edgedistill.formats import answer_first_target, chat, readable
from edgedistill.generation.base import Row, encode_with_calculator_flags
from edgedistill.generation.sampling import Sampling
from edgedistill.records import Question
from edgedistill.sqlguard import QueryRefused, check_query
from edgedistill.table_queries import NOT_IN_TABLES, fill_for, first_wrong_fill, open_query, queries, result_text
from edgedistill.tables import MAX_ROWS, QueryFailed, call, open_tables, schema_text, snake_name, with_context

FMEA = [["Equipment", "Component", "Failure Mode", "Severity", "RPN", "Recommended Action"],
        ["Filler", "Product pump", "Seal leak", "7", "126", "Replace the mechanical seal"],
        ["Capper", "Spindle bearing", "Bearing wear", "8", "192", "Lubricate and trend vibration"],
        ["Capper", "Cap chute", "Cap jam", "5", "60", "Fit a jam sensor"],
        ["Labeller", "Glue roller", "Glue build-up", "4", "48", "Clean the roller]] => each shift"]]


def write_csv(path: Path, rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


@pytest.fixture
def plant(tmp_path):
    folder = tmp_path / "plant"
    folder.mkdir()
    write_csv(folder / "fmea.csv", FMEA)
    write_csv(folder / "numbers.tsv", [["n"]] + [[str(i)] for i in range(MAX_ROWS + 50)], delimiter="\t")
    tool = open_tables([folder])
    yield tool
    tool.close()


# --- the first lock: the parser ---------------------------------------------------------------------------------

ALLOWED = ["SELECT rpn FROM fmea WHERE component ILIKE 'product pump'",
           "WITH capper AS (SELECT * FROM fmea WHERE equipment = 'Capper') SELECT count(*) FROM capper",
           "SELECT equipment, sum(rpn) FROM fmea GROUP BY equipment ORDER BY 2 DESC LIMIT 1",
           "SELECT a.rpn FROM fmea AS a JOIN fmea AS b ON a.component = b.component WHERE b.severity >= 8",
           "SELECT round(avg(severity), 1) FROM fmea WHERE lower(equipment) = 'capper';"]
REFUSED = ["DROP TABLE fmea", "INSERT INTO fmea VALUES (1)", "UPDATE fmea SET rpn = 0", "DELETE FROM fmea",
           "CREATE TABLE x AS SELECT 1", "ATTACH 'other.db'", "COPY fmea TO '/tmp/x.csv'", "PRAGMA database_list",
           "INSTALL httpfs", "LOAD httpfs", "SET threads = 8", "CALL pragma_version()", "DESCRIBE fmea",
           "SELECT 1; DROP TABLE fmea", "SELECT rpn FROM fmea -- note\n; DELETE FROM fmea",
           "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT * FROM 'https://x.y/z.csv'",
           "SELECT * FROM information_schema.tables", "SELECT * FROM main.fmea", "SELECT * FROM duckdb_settings()",
           "SELECT getenv('HOME')", "SELECT pg_sleep(10)", "SELECT read_text('/etc/passwd')",
           "SELECT rpn INTO copy FROM fmea", "SELECT * FROM fmea FOR UPDATE",
           "WITH w AS (DELETE FROM fmea RETURNING *) SELECT * FROM w", "SELECT * FROM secrets", "", "   ;  ",
           # one scalar call that builds a huge value: DuckDB's interrupt and memory cap do not stop it (the long
           # fuzz profile's SELECT range(1000000000) ran 82 s on the connection alone), so the first lock must
           "SELECT range(1000000000)", "SELECT repeat('x', 1000000000)", "SELECT list_sum(range(100000000)) FROM fmea"]


@pytest.mark.parametrize("query", ALLOWED)
def test_the_parser_lets_plain_reads_through(query):
    checked = check_query(query, {"fmea"})
    assert checked.tables == ("fmea",)


@pytest.mark.parametrize("query", REFUSED)
def test_the_parser_refuses_anything_but_one_read_of_the_plants_tables(query):
    with pytest.raises(QueryRefused) as refused:
        check_query(query, {"fmea"})
    message = str(refused.value)
    assert message.startswith("refused: ") and "\n" not in message and len(message) < 240


def test_what_runs_is_the_checked_tree_written_back():
    assert check_query("select rpn from fmea where severity>=8 -- the worst", {"fmea"}).sql == \
        "SELECT rpn FROM fmea WHERE severity >= 8"
    assert "EXTRACT" in check_query("SELECT month(date) FROM log", {"log"}, dialect="postgres").sql


# --- files in, the second lock ----------------------------------------------------------------------------------

def test_spreadsheets_become_tables_with_sql_friendly_names(tmp_path):
    pandas = pytest.importorskip("pandas")
    pandas.DataFrame({"Line No.": ["Line 1", "Line 2"], "Down Minutes": [30, 45]}).to_excel(
        tmp_path / "downtime.xlsx", index=False)
    pandas.DataFrame({"Part": ["Seal kit"], "Stock": [4]}).to_parquet(tmp_path / "parts.parquet")
    write_csv(tmp_path / "fmea.csv", FMEA)
    tool = open_tables([tmp_path / "downtime.xlsx", tmp_path / "parts.parquet", tmp_path / "fmea.csv"])
    names = {t.name: [c.name for c in t.columns] for t in tool.tables}
    assert names["downtime"] == ["line_no", "down_minutes"]
    assert names["parts"] == ["part", "stock"]
    assert "failure_mode" in names["fmea"] and "recommended_action" in names["fmea"]
    assert tool.run("SELECT sum(down_minutes) FROM downtime").rows == ((75,),)
    schema = schema_text(tool.tables)
    assert "downtime(line_no text 'Line 1'|'Line 2', down_minutes int)" in schema
    assert snake_name("2024 Total (h)", set()) == "c_2024_total_h" and snake_name("a", {"a"}) == "a_2"


def test_bad_table_paths_and_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        open_tables([tmp_path / "missing.csv"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a table file"):
        open_tables([tmp_path / "notes.txt"])
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(UserError, match="broken.parquet: cannot read it as a table"):
        open_tables([tmp_path / "broken.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no table files"):
        open_tables([tmp_path / "empty"])


def test_the_connection_itself_refuses_writes_and_files(plant):
    """The second lock holds on its own: the connection, bypassing the parser, can neither write nor read out."""
    for statement in ("CREATE TABLE x AS SELECT 1", "DELETE FROM fmea", "SELECT * FROM read_csv('/etc/passwd')",
                      "INSTALL httpfs", "SET enable_external_access = true", "ATTACH '/tmp/other.duckdb'"):
        with pytest.raises(QueryFailed):
            plant._worker.run(statement)
    assert plant.run("SELECT count(*) FROM fmea").rows == ((4,),)


def test_the_connections_process_is_killed_past_its_hard_limit(plant):
    """On the connection alone, past the parser: a query the interrupt does not stop (here: an interrupt set past
    the hard limit) is ended by killing the child, and the next query gets a fresh one; a scalar call that builds
    a huge value (82 s in the long fuzz profile, past DuckDB's own memory cap) meets the child's address-space cap."""
    import time

    from edgedistill.table_worker import QueryWorker
    worker = QueryWorker(plant._worker.database, time_limit_s=60, hard_limit_s=1.0)
    try:
        assert worker.run("SELECT 1") == (("1",), [(1,)])
        first = worker._process
        started = time.monotonic()
        with pytest.raises(QueryFailed, match="over the time limit"):
            worker.run("SELECT count(*) FROM range(100000000000)")
        assert time.monotonic() - started < 10 and first.poll() is not None     # the child was killed
        assert worker.run("SELECT count(*) FROM fmea") == (("count_star()",), [(4,)])
    finally:
        worker.stop()
    with pytest.raises(QueryFailed, match="over the (time|memory) limit"):
        plant._worker.run("SELECT range(1000000000)")


def test_values_come_back_from_the_connections_process_as_their_types(plant):
    import datetime
    import decimal
    row = plant.run("SELECT DATE '2025-01-06', TIMESTAMP '2025-01-06 07:30:00', CAST(1.5 AS DECIMAL(3, 1)), "
                    "NULL, true, 'Seal', 7, 0.25 FROM fmea LIMIT 1").rows[0]
    assert row == (datetime.date(2025, 1, 6), datetime.datetime(2025, 1, 6, 7, 30), decimal.Decimal("1.5"), None,
                   True, "Seal", 7, 0.25)


def test_a_query_is_cut_at_the_row_limit_and_stopped_at_the_time_limit(plant):
    many = plant.run("SELECT n FROM numbers")
    assert len(many.rows) == MAX_ROWS and many.truncated
    joins = ", ".join(f"numbers n{i}" for i in range(8))
    with pytest.raises(QueryFailed, match="over the (time|memory) limit"):   # whichever the machine hits first
        plant.run(f"SELECT count(*) FROM {joins}")
    assert plant.run("SELECT count(*) FROM fmea").rows == ((4,),)     # the connection is still usable


def test_an_engine_error_is_one_line(plant):
    done = call(plant, "SELECT rpn FROM fmea WHERE rpn > 'many'")
    assert done.error.startswith("the query failed:") and "\n" not in done.error and not done.missing
    assert result_text(done).startswith("the query failed: Conversion Error")


def test_a_column_the_tables_do_not_have_is_not_in_the_tables(plant):
    """"What is the boiler pressure?": no column holds it, so the answer says so instead of an engine error."""
    done = call(plant, "SELECT boiler_pressure FROM fmea WHERE equipment ILIKE 'filler'")
    assert done.missing and "boiler_pressure" in done.error
    assert result_text(done) == NOT_IN_TABLES


# --- the annotation ---------------------------------------------------------------------------------------------

def test_the_runtime_fills_the_rows_after_the_arrow(plant):
    text = "Answer: [[SELECT rpn FROM fmea WHERE component ILIKE 'product pump' =>"
    assert open_query(text).strip() == "SELECT rpn FROM fmea WHERE component ILIKE 'product pump'"
    assert fill_for(text, plant) == " 126]]"
    assert fill_for(text + " 126]]", plant) is None
    assert readable(text + " 126]]") == "Answer: 126"
    assert queries(text + " 126]]") == ["SELECT rpn FROM fmea WHERE component ILIKE 'product pump'"]


def test_the_result_line_says_no_rows_refusals_and_counts(plant):
    assert result_text(call(plant, "SELECT rpn FROM fmea WHERE equipment = 'Boiler'")) == NOT_IN_TABLES
    assert result_text(call(plant, "DROP TABLE fmea")).startswith("refused: only SELECT")
    assert result_text(call(plant, "SELECT n FROM numbers WHERE n < 20")).endswith("; ... (20 rows)")
    # a cell cannot close the annotation or open another
    cell = result_text(call(plant, "SELECT recommended_action FROM fmea WHERE equipment = 'Labeller'"))
    assert "]]" not in cell and "=>" not in cell


def test_an_engine_that_wrote_its_own_rows_is_corrected(plant):
    wrote = "Answer: [[SELECT rpn FROM fmea WHERE component ILIKE 'cap chute' => 999]] done"
    cut, fill = first_wrong_fill(wrote, plant)
    assert wrote[:cut].endswith("=>") and fill == " 60]]"
    assert first_wrong_fill(wrote[:cut] + fill, plant) is None


class CharTokenizer:
    """One token per character: enough to drive the decoding loop's rules."""
    eos = {0}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_the_decoding_loop_feeds_the_rows_as_forced_tokens(plant):
    tok = CharTokenizer()
    row = Row(Sampling(max_new_tokens=200, tables=plant), tok.decode, tok.encode, tok.eos)
    for char in "Answer: [[SELECT severity FROM fmea WHERE failure_mode ILIKE 'cap jam' =>":
        row.step(ord(char))
    assert tok.decode(row.queue) == " 5]]"
    while row.queue:
        row.step(ord("X"))     # the model's choices are ignored while the tool's tokens are fed
    assert row.text.endswith("=> 5]]")


def test_training_targets_split_where_the_tool_writes():
    tok = CharTokenizer()
    target = "Answer: [[SELECT 1 FROM t => 1]]"
    ids, forced = encode_with_calculator_flags(tok, target)
    written = "".join(chr(i) for i, f in zip(ids, forced) if f)
    assert written == " 1]]" and tok.decode(ids) == target


# --- questions ----------------------------------------------------------------------------------------------------

def test_rows_answers_compare_as_sets():
    q = Question(id="q", question="Which?", answer="Bearing; Seal", answer_type="rows", query="SELECT 1")
    assert is_correct(extract_answer("Answer: [[SELECT x => seal; bearing]]", "rows"), q)
    assert not is_correct(extract_answer("Answer: [[SELECT x => seal]]", "rows"), q)
    assert answer_first_target(q) == "Answer: [[SELECT 1 => Bearing; Seal]]"


def test_table_questions_carry_their_schema_into_the_prompt(plant):
    q = Question(id="q", question="RPN of the cap chute?", answer_type="rows",
                 query="SELECT rpn FROM fmea WHERE component ILIKE 'cap chute'")
    arithmetic = Question(id="a", question="2 times 3?", answer="6")
    shown, plain = with_context([q, arithmetic], plant)
    assert shown.answer == "60" and "fmea(" in shown.context and "numbers(" in shown.context
    assert plain.context is None and "Tables:" not in chat(plain)[0]["content"]
    assert chat(shown)[0]["content"].endswith(shown.context)
    own = with_context([q], plant, other_tables=0)[0]
    assert "numbers(" not in own.context
    with pytest.raises(UserError, match="question bad"):
        with_context([Question(id="bad", question="?", query="SELECT * FROM secrets")], plant)


def test_the_values_a_question_names_are_linked_to_their_columns(plant):
    from edgedistill.table_values import ValueIndex, hint_line
    index = ValueIndex(plant)
    found = index.find("What is the RPN of the spindle bearing on the capper?")
    assert [(link.value, link.table, link.column) for link in found] == [
        ("Spindle bearing", "fmea", "component"), ("Capper", "fmea", "equipment")]
    assert hint_line(found) == "(in the tables: 'Spindle bearing' is fmea.component; 'Capper' is fmea.equipment)"
    assert index.find("What is the weather?") == [] and hint_line([]) is None
    q = Question(id="q", question="Severity of the cap jam?", answer_type="rows",
                 query="SELECT severity FROM fmea WHERE failure_mode ILIKE 'cap jam'")
    linked = with_context([q], plant, values=index)[0]
    assert linked.hints == "(in the tables: 'Cap jam' is fmea.failure_mode)"
    assert chat(linked)[-1]["content"] == "Severity of the cap jam?\n" + linked.hints


@pytest.fixture
def two_surveys(tmp_path):
    """Two tables that share a person's name: what a table the student never trained on looks like beside the
    trained ones."""
    folder = tmp_path / "survey"
    folder.mkdir()
    write_csv(folder / "fmea.csv", [["fmea_id", "owner", "failure_mode", "SEV"], ["FM-1", "D. Okafor", "Seal leak", "8"],
                                    ["FM-2", "B. Keller", "Cap jam", "5"]])
    write_csv(folder / "vibration_survey.csv", [["survey_point", "analyst", "condition", "alarm_mm_s"],
                                                ["VS-01", "D. Okafor", "Alarm", "7.1"],
                                                ["VS-02", "B. Keller", "Good", "4.5"]])
    tool = open_tables([folder])
    yield tool
    tool.close()


def test_name_hints_link_a_questions_column_words_and_cut_a_shared_name_to_their_table(two_surveys):
    from edgedistill.table_values import ValueIndex, hint_line
    question = "Total alarm mm/s for D. Okafor?"
    # values alone: the name sits in both tables, and "alarm" reads as the condition value
    assert hint_line(ValueIndex(two_surveys).find(question)) == \
        "(in the tables: 'D. Okafor' is fmea.owner, vibration_survey.analyst; 'Alarm' is vibration_survey.condition)"
    names = ValueIndex(two_surveys, names=True)
    assert hint_line(names.find(question)) == ("(in the tables: 'alarm mm/s' is the column vibration_survey.alarm_mm_s;"
                                               " 'D. Okafor' is vibration_survey.analyst)")
    # a sheet's abbreviation as the question spells it out, a plural, and a table's own name
    assert hint_line(names.find("Which failure modes have a severity of 8 in the FMEA?")) == (
        "(in the tables: 'failure modes' is the column fmea.failure_mode; 'severity' is the column fmea.sev; "
        "'FMEA' is the table fmea)")
    # only the tables shown: a training prompt without vibration_survey gets no link into it
    assert hint_line(names.find(question, shown=["fmea"])) == "(in the tables: 'D. Okafor' is fmea.owner)"
    assert names.find("What is the weather?") == []


def test_narrowing_keeps_a_joins_other_table_and_a_tie():
    from edgedistill.table_values import COLUMN, Link, narrowed
    rpn, seal = Link("RPN", "fmea", "rpn", COLUMN), Link("Seal", "fmea", "component")
    point = Link("VS-01", "vibration_survey", "survey_point")
    shared = [Link("D. Okafor", "fmea", "owner"), Link("D. Okafor", "vibration_survey", "analyst")]
    assert narrowed([rpn, seal, point, *shared]) == [rpn, seal, point, shared[0]]
    assert narrowed([point, *shared]) == [point, shared[1]]
    assert narrowed([rpn, point, *shared]) == [rpn, point, *shared]     # a tie keeps both places
    assert narrowed(shared) == shared                                    # one name: nothing to point with


def test_name_hints_need_value_hints(tmp_path, capsys):
    from edgedistill.cli import main
    config = tmp_path / "c.yaml"
    config.write_text("knowledge: {tables: [plant], name_hints: true}\n")
    assert main(["teach", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "knowledge.value_hints: true" in capsys.readouterr().err


def test_the_shipped_splits_are_verified_and_keep_their_tables_apart():
    """Every shipped question's reference query returns its answer through the locked tool; no training question
    (train, practice) names the held-out table or the dev table; dev and held-out wordings are not train's."""
    from edgedistill.records import load_questions
    tool = open_tables(["plant", "plant_heldout", "plant_dev", "plant_practice"])
    try:
        splits = {name: load_questions(f"plant_tables:{name}")
                  for name in ("train", "dev", "heldout", "heldout_table", "practice", "dev_table")}
        for name, questions in splits.items():
            assert questions, name
            for q in questions:
                assert is_correct(result_text(call(tool, q.query)), q), (name, q.id)
        trained = [q.query for q in splits["train"] + splits["practice"]]
        assert not [s for s in trained if "lubrication_schedule" in s or "vibration_survey" in s]
        assert all("vibration_survey" in q.query for q in splits["dev_table"])
        train_words = {q.question for q in splits["train"]}
        assert not train_words & {q.question for name in ("dev", "heldout") for q in splits[name]}
    finally:
        tool.close()
