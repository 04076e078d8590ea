"""The app and the API with the plant's tables: every question asked with their schema, a query answered with the
rows the tool fills in while decoding, the page's query-and-rows table, and the API's `tables` record."""
from __future__ import annotations

import csv

import pytest

from edgedistill import UserError
from edgedistill.config import ServeConfig
from edgedistill.confidence import sane
from edgedistill.records import Question
from edgedistill.serve.answering import QA
from edgedistill.serve.api import shown_text, summary
from edgedistill.serve.app import evidence_markdown
from edgedistill.tables import call, open_tables
from tests.test_serve import CharModel

SCRIPT = "Answer: [[SELECT rpn FROM fmea WHERE component ILIKE 'cap chute' => 99]]\nReason: the FMEA sheet."


@pytest.fixture
def tables(tmp_path):
    with (tmp_path / "fmea.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["Equipment", "Component", "RPN"], ["Capper", "Cap chute", 60],
                                      ["Filler", "Seal | gasket", 126]])
    tool = open_tables([tmp_path])
    yield tool
    tool.close()


class SchemaSeeingModel(CharModel):
    """CharModel that keeps the conversations it is asked."""
    def prompt_ids(self, messages):
        self.messages = messages
        return [1]


def test_a_plain_question_is_asked_with_the_schema_and_answered_from_the_rows(tables):
    model = SchemaSeeingModel(SCRIPT)
    qa = QA(model, ServeConfig(samples=0), tables=tables)
    asking = qa.ask(qa.question("What is the RPN of the cap chute?"), answer_only=True)
    text = [t for t, _ in asking.stream()][-1]
    assert "Tables:\nfmea(equipment text" in model.messages[0]["content"]
    assert text.startswith("Answer: [[SELECT rpn FROM fmea WHERE component ILIKE 'cap chute' => 60]]")  # not 99
    assert asking.answered_as.answer_type == "rows"
    assert shown_text(text, final=True).startswith("Answer: 60")
    calls = qa.tool_calls(text)
    assert calls[0].cells == [["60"]] and calls[0].result.columns == ("rpn",)
    record = summary(asking.answered_as, text, asking.confidence("60"), 0.6, calls)
    assert record["answer"] == "60" and record["tables"][0]["rows"] == [["60"]]
    assert record["tables"][0]["query"].startswith("SELECT rpn FROM fmea")


def test_plant_data_is_a_kind_only_with_tables(tables):
    plain = QA(CharModel(), ServeConfig(samples=0))
    assert "Plant data" not in plain.modes
    with pytest.raises(UserError, match="--tables"):
        plain.question("RPN of the seal?", "rows")
    with_tables = QA(CharModel(), ServeConfig(samples=0), tables=tables)
    assert with_tables.modes["Plant data"] == "rows"
    assert with_tables.question("RPN of the seal?", "rows").context.startswith("fmea(")


def test_the_page_shows_the_query_and_its_rows_as_a_table(tables):
    page = evidence_markdown([call(tables, "SELECT component, rpn FROM fmea ORDER BY rpn")])
    assert "**Query:** `SELECT component, rpn FROM fmea ORDER BY rpn`" in page
    assert "| component | rpn |" in page and "| Seal \\| gasket | 126 |" in page     # a pipe cannot split a cell
    refused = evidence_markdown([call(tables, "DROP TABLE fmea")])
    assert "refused: only SELECT" in refused and refused.count("\n") == 1
    assert "not in the tables" in evidence_markdown([call(tables, "SELECT rpn FROM fmea WHERE rpn > 1000")])


def test_a_refused_query_is_never_a_sane_answer():
    q = Question(id="q", question="?", answer_type="rows")
    assert not sane("refused: only SELECT queries run here, not DROP", q)
    assert sane("not in the tables", q) and sane("Capper; Filler", q)
