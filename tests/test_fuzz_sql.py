"""Hostile queries against the table tool, and questions that carry SQL through the decoding loop.

What must hold for every generated input: no write (each table's rows and the folder's files are as they were), no
file read (a canary file's secret never comes back), no traceback (only QueryRefused or QueryFailed, and the
tool's answer is one line). The fast profile runs in `make test`; the long one (nightly) is

    EDGEDISTILL_FUZZ=long EDGEDISTILL_FUZZ_EXAMPLES=40000 .venv/bin/python -m pytest tests/test_fuzz_sql.py
"""
from __future__ import annotations

import csv
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedistill.generation.base import Row
from edgedistill.generation.sampling import Sampling
from edgedistill.sqlguard import QueryRefused
from edgedistill.table_queries import fill_for, result_text
from edgedistill.tables import QueryFailed, call, open_tables
from tests.test_fuzz import PROFILE  # noqa: F401  (registers and loads the fast/long profiles)

SECRET = "canary-7f3a9c"


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzplant")
    with (folder / "fmea.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["equipment", "component", "severity", "rpn"], ["Filler", "Seal", 7, 126],
                                      ["Capper", "Cap chute", 5, 60], ["Capper", "Bearing", 8, 192]])
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.csv").write_text(f"secret\n{SECRET}\n")
    tool = open_tables([folder / "fmea.csv"])
    yield tool, folder, outside
    tool.close()


def snapshot(tool, *folders) -> tuple:
    """What a write would change: the table's rows, and every file (name and bytes) of the folders."""
    rows = tool.run("SELECT * FROM fmea ORDER BY rpn").rows
    files = sorted((str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for folder in folders
                   for p in folder.rglob("*") if p.is_file())
    return rows, files


FRAGMENTS = [
    "SELECT", "*", "FROM", "fmea", "WHERE", "rpn", ">", "1", ";", "--", "/*", "*/", "'", '"', "(", ")", ",", "UNION",
    "DROP TABLE fmea", "DELETE FROM fmea", "INSERT INTO fmea VALUES ('x','y',1,1)", "UPDATE fmea SET rpn=0",
    "CREATE TABLE t AS SELECT 1", "ATTACH '{out}/x.db' AS x", "COPY fmea TO '{out}/dump.csv'", "PRAGMA version",
    "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access=true", "CALL pragma_version()", "EXPORT DATABASE '{out}'",
    "read_csv('{out}/secret.csv')", "'{out}/secret.csv'", "read_text('{out}/secret.csv')", "read_blob('{out}/secret.csv')",
    "glob('{out}/*')", "getenv('HOME')", "'https://example.com/x.csv'", "duckdb_settings()", "information_schema.tables",
    "main.fmea", "system.main.fmea", "pg_sleep(5)", "set_config('a','b',false)", "range(1000000000)",
    "generate_series(1, 100000000)", "repeat('x', 100000000)", "fmea a, fmea b, fmea c, fmea d, fmea e, fmea f",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT * FROM r", "INTO t", "FOR UPDATE",
    "$1", "?", "\\x00", "\u202e", "ILIKE", "'%", "=>", "]]", "[[", "\n",
]


def hostile_query(out: str):
    pieces = st.lists(st.sampled_from([f.replace("{out}", out) for f in FRAGMENTS]) | st.text(max_size=12),
                      min_size=1, max_size=12)
    return pieces.map(" ".join)


def check_answer(tool, query: str) -> str:
    try:
        tool.run(query)
    except (QueryRefused, QueryFailed) as exc:
        assert "\n" not in str(exc) and str(exc)
    done = call(tool, query)
    line = result_text(done)
    assert "\n" not in line and SECRET not in line
    return line


@given(data=st.data())
def test_no_hostile_query_writes_reads_a_file_or_crashes(plant, data):
    tool, folder, outside = plant
    before = snapshot(tool, folder, outside)
    query = data.draw(hostile_query(str(outside)))
    check_answer(tool, query)
    assert snapshot(tool, folder, outside) == before


@given(data=st.data())
def test_a_query_the_model_writes_mid_answer_is_filled_with_one_line(plant, data):
    """A question that carries SQL ends up, at worst, as the model's own query: the decoding loop fills it with
    the tool's one-line answer and goes on, whatever the query."""
    tool, folder, outside = plant
    before = snapshot(tool, folder, outside)
    query = data.draw(hostile_query(str(outside))).replace("=>", "").replace("[[", "").replace("]]", "")
    text = f"Answer: [[{query} =>"
    fill = fill_for(text, tool)
    assert fill is not None and fill.endswith("]]") and "\n" not in fill and SECRET not in fill
    row = Row(Sampling(max_new_tokens=4000, tables=tool), decode=lambda ids: "".join(map(chr, ids)),
              encode=lambda s: [ord(c) for c in s], eos={-1})  # no character is the stop id
    for char in text:
        row.step(ord(char))
    assert "".join(map(chr, row.queue)) == fill
    assert snapshot(tool, folder, outside) == before


@given(data=st.data())
def test_the_connection_alone_neither_writes_nor_reads_files(plant, data):
    """The second lock under fuzz: hostile statements sent straight to the connection's process, past the parser;
    each is answered or killed within its hard limit (table_worker.py)."""
    tool, folder, outside = plant
    before = snapshot(tool, folder, outside)
    query = data.draw(hostile_query(str(outside)))
    try:
        fetched = tool._worker.run(query)
    except QueryFailed as exc:      # refused, malformed or stopped: one line, and what it did not do
        assert "\n" not in str(exc)
        fetched = []
    assert SECRET not in repr(fetched)
    assert snapshot(tool, folder, outside) == before
