"""The plant's tables as a tool the model queries: spreadsheets in, a locked SQL engine, results out.

    tables = open_tables(["plant/fmea.csv", "plant/downtime.xlsx"])   # or a folder, or a postgresql:// URL
    tables.schema_text()       # what a prompt shows: tables, columns, types, a few values per text column
    tables.run("SELECT rpn FROM fmea WHERE component ILIKE 'seal'")   # QueryResult, or QueryRefused

Files become tables in DuckDB, an embedded engine that reads CSV and Parquet itself (Excel through openpyxl: its
own Excel reader is an extension it would download). Why DuckDB: in-process (no server for a workstation), typed
columns from a spreadsheet without a schema, and settings that switch off every way out of the process.
Table and column names are made SQL-friendly (`Failure Mode` -> failure_mode); a sheet's table is named after its
file (and its sheet, when a workbook has several).

Two locks, each enough on its own for what it covers:
1. sqlguard.check_query: one SELECT over these tables and allow-listed functions, else QueryRefused.
2. The connection: a database file written once and opened read-only, external access off (no files, URLs,
   ATTACH, extensions), configuration locked, one thread, a memory cap, a time limit (interrupt) and a row cap,
   in a child process with a capped address space that is killed when a query runs past its hard limit
   (table_worker.py: one huge scalar call is stopped by neither the interrupt nor the memory cap).
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from edgedistill import UserError
from edgedistill.sqlguard import check_query, one_line
from edgedistill.table_worker import LOCKED, QueryWorker
from edgedistill.table_base import (MAX_EXAMPLE_DISTINCT, MAX_ROWS, MEMORY_LIMIT, TIME_LIMIT_S, Column,  # noqa: F401
                                    QueryFailed, QueryResult, TableInfo, TableTool, ToolCall, call, cell_text,
                                    schema_text, short_examples, simple_type, tables_read)

TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".parquet")
def snake_name(name: str, taken: set[str]) -> str:
    """A SQL-friendly, unique, lower-case name: `Failure Mode (FM)` -> failure_mode_fm; `2024` -> c_2024."""
    base = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "column"
    if base[0].isdigit():
        base = "c_" + base
    unique, n = base, 2
    while unique in taken:
        unique, n = f"{base}_{n}", n + 1
    taken.add(unique)
    return unique


# Tables shipped in the package, named like the packaged question splits: seeds/<name>/*.csv.
PACKAGED_TABLES = ("plant", "plant_heldout", "plant_dev", "plant_practice")


def table_files(paths: Sequence[str | Path]) -> list[Path]:
    """The table files of the paths given: files as they are, folders for the table files directly in them, and
    the shipped plant by name (`plant`, `plant_heldout`, `plant_dev`, `plant_practice`)."""
    from edgedistill.records import SEEDS_DIR
    files = []
    for raw in paths:
        path = SEEDS_DIR / str(raw) if str(raw) in PACKAGED_TABLES else Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{path}: no table files in this folder (looked for {', '.join(TABLE_SUFFIXES)})")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in TABLE_SUFFIXES:
                raise UserError(f"{path}: not a table file; give {', '.join(TABLE_SUFFIXES)} files or a folder")
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder (--tables / knowledge.tables)")
    return files


def open_tables(paths: Sequence[str | Path]) -> TableTool:
    """A table tool over files and folders, or over a PostgreSQL database when given its URL."""
    urls = [str(p) for p in paths if str(p).startswith(("postgresql://", "postgres://"))]
    if urls:
        if len(urls) != len(paths) or len(urls) > 1:
            raise UserError("tables: give one postgresql:// URL alone, or files and folders, not both")
        from edgedistill.postgres_tables import PostgresTables
        return PostgresTables(urls[0])
    return DuckDBTables(table_files(paths))


class DuckDBTables:
    """Files loaded once into a DuckDB database file, then opened read-only with every way out switched off."""
    dialect = "duckdb"

    def __init__(self, files: Sequence[Path]):
        import duckdb
        self._folder = Path(tempfile.mkdtemp(prefix="edgedistill-tables-"))
        atexit.register(shutil.rmtree, self._folder, True)
        database = str(self._folder / "tables.duckdb")
        writer = duckdb.connect(database, config={"threads": 1, "memory_limit": MEMORY_LIMIT,
                                                  "autoinstall_known_extensions": False,
                                                  "autoload_known_extensions": False})
        try:
            taken: set[str] = set()
            for path in files:
                for name, relation, source in _relations(writer, path):
                    _create_table(writer, snake_name(name, taken), relation, source)
        finally:
            writer.close()
        reader = duckdb.connect(database, read_only=True, config={**LOCKED, "memory_limit": MEMORY_LIMIT})
        try:
            self.tables = tuple(_describe(reader, name, source) for name, source in _sources(reader))
        finally:
            reader.close()
        self._lock = threading.Lock()
        self._worker = QueryWorker(database)      # the model's queries: in a child process, killed past its limit

    def run(self, query: str) -> QueryResult:
        checked = check_query(query, {t.name for t in self.tables}, self.dialect)
        with self._lock:
            columns, rows = self._worker.run(checked.sql)
        return QueryResult(sql=checked.sql, columns=columns, rows=tuple(rows[:MAX_ROWS]),
                           truncated=len(rows) > MAX_ROWS)

    def close(self) -> None:
        self._worker.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def _sources(connection) -> list[tuple[str, str]]:
    rows = connection.execute("SELECT table_name, comment FROM duckdb_tables() ORDER BY table_name")
    return [(name, comment or name) for name, comment in rows.fetchall()]


def _relations(connection, path: Path):
    """(table name, relation, source) for each table in a file: one per CSV/TSV/Parquet, one per Excel sheet."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            yield path.stem, connection.read_csv(str(path), header=True, delimiter="\t" if suffix == ".tsv" else None), str(path)
        elif suffix == ".parquet":
            yield path.stem, connection.read_parquet(str(path)), str(path)
        else:
            import pandas
            sheets = pandas.read_excel(path, sheet_name=None, engine="openpyxl")
            for sheet, frame in sheets.items():
                if frame.empty and not len(frame.columns):
                    continue
                name = path.stem if len(sheets) == 1 else f"{path.stem}_{sheet}"
                yield name, connection.from_df(frame), f"{path} [{sheet}]"
    except UserError:
        raise
    except Exception as exc:     # the readers raise their own types (duckdb, openpyxl, zipfile, pandas)
        raise UserError(f"{path}: cannot read it as a table ({one_line(exc)})") from None


def _create_table(connection, name: str, relation, source: str) -> None:
    taken: set[str] = set()
    columns = ", ".join(f'"{c.replace(chr(34), chr(34) * 2)}" AS {snake_name(c, taken)}' for c in relation.columns)
    try:
        relation.project(columns).create(name)
    except Exception as exc:
        raise UserError(f"{source}: cannot load it as table {name} ({one_line(exc)})") from None
    connection.execute(f"COMMENT ON TABLE {name} IS $${source.replace('$$', '$')}$$")


def _describe(connection, name: str, source: str) -> TableInfo:
    described = connection.execute(f"DESCRIBE {name}").fetchall()
    count = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    columns = []
    for column, engine_type, *_ in described:
        kind = simple_type(engine_type)
        examples: tuple[str, ...] = ()
        if kind == "text":
            top = connection.execute(
                f'SELECT "{column}" FROM {name} WHERE "{column}" IS NOT NULL GROUP BY 1 '
                f'ORDER BY count(*) DESC, 1 LIMIT {MAX_EXAMPLE_DISTINCT + 1}').fetchall()
            examples = short_examples([str(v) for (v,) in top])
        columns.append(Column(name=column, type=kind, examples=examples))
    return TableInfo(name=name, columns=tuple(columns), rows=int(count), source=source)


def with_context(questions: list, tool: TableTool, *, seed: int = 0, other_tables: int | None = None,
                 mixed_share: float = 0.0, values=None) -> list:
    """The questions with the tables' schema as their context (a copy each; the files are not touched).

    A table question (one with a `query`) shows the tables its query reads. `other_tables=None` adds every other
    table in the tool's order (evaluation and the app: the prompt the served model sees); a number adds that many
    drawn at random and shuffles them in (training: the student learns to pick its table from a changing list).
    `mixed_share` of the other questions get a random handful of tables too, so the student learns that arithmetic
    and options need none of them. A table question without an answer gets its query's rows; a query that does
    not run is a UserError naming the question. `values` (a table_values.ValueIndex): each question that shows
    tables also names the values it uses that they hold (`hints`).
    """
    import dataclasses
    import random
    rng = random.Random(seed)
    by_name = {t.name: t for t in tool.tables}
    names = list(by_name)
    out = []
    for q in questions:
        if q.query:
            own = tables_read(q.query, tool)
            if not own:
                raise UserError(f"question {q.id}: its query is not one the table tool runs: {q.query[:80]!r}")
            answer = q.answer
            if answer is None:
                done = call(tool, q.query)
                if done.error:
                    raise UserError(f"question {q.id}: its query does not run ({done.error})")
                from edgedistill.table_queries import result_text
                answer = result_text(done)
            shown = _tables_shown(list(own), names, other_tables, rng)
            out.append(dataclasses.replace(q, answer=answer, answer_type="rows", **_context(q, shown, by_name, values)))
        elif mixed_share and rng.random() < mixed_share and not q.context:
            shown = _tables_shown([], names, other_tables or 2, rng)
            out.append(dataclasses.replace(q, **_context(q, shown, by_name, values)))
        else:
            out.append(q)
    return out


def _context(q, shown: list[str], by_name: dict, values) -> dict:
    """A question's `context` (the schema of the tables shown) and, with a ValueIndex, its `hints` (the values it
    names that those tables hold)."""
    fields = {"context": schema_text([by_name[name] for name in shown])}
    if values is not None:
        from edgedistill.table_values import hint_line
        fields["hints"] = hint_line(values.find(q.question, shown))
    return fields


def as_served(questions: list, tool: TableTool | None, value_hints: bool = False, name_hints: bool = False) -> list:
    """Table questions as the app asks them: the schema of every table as their context and, with `value_hints`,
    the values they name linked to their columns. What evaluation and the export's parity check ask."""
    if tool is None or not any(q.query for q in questions):
        return questions
    from edgedistill.table_values import index_of
    return with_context(questions, tool, values=index_of(tool, names=name_hints) if value_hints else None)


def _tables_shown(own: list[str], names: list[str], other_tables: int | None, rng) -> list[str]:
    """The tables a prompt shows: every one in the tool's order (`other_tables=None`, as served), or the question's
    own and up to `other_tables` others drawn at random, shuffled (training)."""
    if other_tables is None:
        return names
    others = [name for name in names if name not in own]
    shown = own + rng.sample(others, min(len(others), rng.randint(0, other_tables) if own else max(1, other_tables)))
    rng.shuffle(shown)
    return shown
