"""What every table tool shares: its records, its limits, how a schema and a value are written, and one call of
a query with its outcome. No engine here: tables.py (DuckDB, files) and postgres_tables.py (a server) import it,
and table_queries.py (the `[[query => rows]]` annotation) calls tools through it.
"""
from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from edgedistill.calculator import format_number
from edgedistill.sqlguard import QueryRefused, check_query

MAX_ROWS = 200              # rows a query may return; more is cut and said
TIME_LIMIT_S = 2.0          # a query's wall-clock limit
MEMORY_LIMIT = "256MB"
EXAMPLE_VALUES = 3          # distinct values a prompt shows per text column
MAX_EXAMPLE_CHARS = 24      # longer values are free text: the prompt shows none of them
MAX_EXAMPLE_DISTINCT = 12   # a column with more distinct values (ids, descriptions) shows none: the question
                            # names the value it means, and every token of the schema is paid on each question


class QueryFailed(ValueError):
    """A checked query that the engine could not run (an unknown column, a type error, the time limit).
    `missing`: it names a column the tables do not have, so what it asks for is not in the tables."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Column:
    name: str
    type: str                          # int, number, text, date, timestamp, bool
    examples: tuple[str, ...] = ()     # a few distinct values of a short text column, most common first


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[Column, ...]
    rows: int
    source: str                        # the file (and sheet) it was read from, or the server's table


@dataclass(frozen=True)
class QueryResult:
    sql: str                           # the query as it ran (sqlglot's rendering of the checked tree)
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]            # at most MAX_ROWS
    truncated: bool = False            # the query returned more than MAX_ROWS rows


@runtime_checkable
class TableTool(Protocol):
    dialect: str                       # the SQL dialect queries are checked and run in
    tables: tuple[TableInfo, ...]

    def run(self, query: str) -> QueryResult:
        """The rows a query returns: QueryRefused (first lock) or QueryFailed (the engine) otherwise."""

    def close(self) -> None:
        """Release the connection (and any files it used)."""


_TYPES = (("INT", "int"), ("DECIMAL", "number"), ("DOUBLE", "number"), ("FLOAT", "number"), ("REAL", "number"),
          ("NUMERIC", "number"), ("TIMESTAMP", "timestamp"), ("DATE", "date"), ("BOOL", "bool"))


def simple_type(engine_type: str) -> str:
    """An engine's column type as a prompt names it: int, number, text, date, timestamp or bool."""
    upper = engine_type.upper()
    return next((simple for prefix, simple in _TYPES if prefix in upper), "text")


def short_examples(values: list[str]) -> tuple[str, ...]:
    """The values a prompt shows for a text column, from its most common (up to MAX_EXAMPLE_DISTINCT + 1): none
    when it has more distinct values than that (ids) or any is long (free text), else the first few."""
    if len(values) > MAX_EXAMPLE_DISTINCT or not values or any(len(v) > MAX_EXAMPLE_CHARS or "'" in v for v in values[:EXAMPLE_VALUES]):
        return ()
    return tuple(values[:EXAMPLE_VALUES])


def schema_text(tables: Sequence[TableInfo]) -> str:
    """The schema as a prompt shows it, one line per table:
    `fmea(equipment text 'Filler pump'|'Capper', severity int, ...)`."""
    lines = []
    for table in tables:
        parts = []
        for column in table.columns:
            shown = f"{column.name} {column.type}"
            if column.examples:
                shown += " " + "|".join(f"'{v}'" for v in column.examples)
            parts.append(shown)
        lines.append(f"{table.name}({', '.join(parts)})")
    return "\n".join(lines)


def cell_text(value) -> str:
    """One value as the tool writes it into the model's text and the page's table."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        try:
            return format_number(float(value))
        except (OverflowError, ValueError):
            return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value.isoformat()
    return " ".join(str(value).split())


def tables_read(query: str, tool: TableTool) -> tuple[str, ...]:
    """The tables a (reference) query reads; () when the first lock refuses it."""
    try:
        return check_query(query, {t.name for t in tool.tables}, tool.dialect).tables
    except QueryRefused:
        return ()


@dataclass
class ToolCall:
    """One query the model wrote and what came of it, for the page and the API."""
    query: str
    result: QueryResult | None = None
    error: str | None = None           # a refusal or failure, one line
    cells: list[list[str]] = field(default_factory=list)
    missing: bool = False              # it failed on a column the tables do not have


def call(tool: TableTool, query: str) -> ToolCall:
    """Run a model's query and keep either its rows (as text cells) or its one-line refusal."""
    try:
        result = tool.run(query)
    except (QueryRefused, QueryFailed) as exc:
        return ToolCall(query=query, error=str(exc), missing=getattr(exc, "missing", False))
    return ToolCall(query=query, result=result, cells=[[cell_text(v) for v in row] for row in result.rows])
