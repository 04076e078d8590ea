"""The first lock on a query the model writes: parsed by a real SQL parser (sqlglot) and refused unless it is one
read-only SELECT over the plant's own tables, calling only functions on an allow-list.

The second lock is the connection it then runs on (tables.py): read-only, external access off, a time limit and a
row limit. Neither lock trusts the other. What runs is the SQL sqlglot writes back from the tree it checked, not
the model's text, so a query that two parsers would read differently (a comment, a quoting trick) runs as the tree
that was checked.

Refused, with one line saying why: anything but a single query (no INSERT, UPDATE, DELETE, CREATE, DROP, ATTACH,
COPY, PRAGMA, INSTALL, LOAD, SET, CALL: sqlglot reads those as other statements or as a bare Command); SELECT INTO
and FOR UPDATE; a table that is not one of the plant's (files, URLs, `schema.table`, system catalogs, table
functions such as read_csv); a function not on the allow-list (pg_sleep, set_config, read_text, getenv...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# sqlglot logs a warning for each statement it falls back to reading as a Command (PRAGMA, CALL): a refusal says
# why already, and the model's queries are not the operator's to read in the log.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

MAX_QUERY_CHARS = 2000
DIALECTS = ("duckdb", "postgres")

# Functions a question about plant records needs: aggregates, rounding, text case and trimming, dates. Named as
# sqlglot names its expression classes (sql_name()), or, for functions it does not know, as written (lower case).
ALLOWED_FUNCTIONS = frozenset({
    "COUNT", "SUM", "AVG", "MIN", "MAX", "MEDIAN", "STDDEV", "ANY_VALUE", "GROUP_CONCAT", "STRING_AGG",
    "ROUND", "ABS", "CEIL", "FLOOR", "GREATEST", "LEAST", "COALESCE", "NULLIF", "IF", "CASE", "CAST", "TRY_CAST",
    "LOWER", "UPPER", "TRIM", "LENGTH", "SUBSTRING", "CONCAT", "DPIPE",
    "EXTRACT", "YEAR", "MONTH", "DAY", "DAYNAME", "MONTHNAME", "TIMESTAMP_TRUNC", "DATE_TRUNC", "TIME_TO_STR",
    "STR_TO_TIME", "CURRENT_DATE", "DATE", "TS_OR_DS_TO_DATE", "DATE_DIFF", "DATEDIFF",
    "date_part", "datepart", "strftime", "date_diff", "datediff",
    "AND", "OR", "XOR", "EXISTS",    # operators sqlglot models as functions
})
# Statement kinds that are never a read: checked anywhere in the tree (a CTE may hide an INSERT in PostgreSQL).
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Command, exp.Copy, exp.Into,
           exp.Lock, exp.Alter, exp.Set, exp.Pragma, exp.Use, exp.TruncateTable, exp.Transaction, exp.Commit,
           exp.Rollback, exp.Describe, exp.Cache, exp.Uncache, exp.LoadData, exp.Refresh, exp.Placeholder)


class QueryRefused(ValueError):
    """The query is not one the table tool runs; str() is the one line the page and the API show."""


@dataclass(frozen=True)
class CheckedQuery:
    sql: str                 # what runs: the checked tree written back in the engine's dialect
    tables: tuple[str, ...]  # the plant tables it reads


def check_query(text: str, tables: set[str] | frozenset[str], dialect: str = "duckdb") -> CheckedQuery:
    """The query as it will run, or QueryRefused. `tables`: the plant's table names (case-insensitive)."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect {dialect!r}: one of {', '.join(DIALECTS)}")
    text = (text or "").strip().rstrip(";").strip()
    if not text:
        raise QueryRefused("refused: the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryRefused(f"refused: the query is longer than {MAX_QUERY_CHARS} characters")
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except (SqlglotError, RecursionError, ValueError) as exc:
        raise QueryRefused(f"refused: not SQL this tool reads ({one_line(exc)})") from None
    if len(statements) != 1:
        raise QueryRefused(f"refused: one statement only, found {len(statements)}")
    root = statements[0]
    if not isinstance(root, exp.Query):
        raise QueryRefused(f"refused: only SELECT queries run here, not {root.key.upper()}")
    for node in root.walk():
        if isinstance(node, _WRITES):
            raise QueryRefused(f"refused: {node.key.upper()} is not allowed in a read-only query")
    read = _tables_read(root, {name.lower() for name in tables})
    _check_functions(root)
    try:
        sql = root.sql(dialect=dialect, comments=False)   # a comment could end early and hide a statement
    except (SqlglotError, RecursionError, ValueError) as exc:
        raise QueryRefused(f"refused: cannot write the query back ({one_line(exc)})") from None
    return CheckedQuery(sql=sql, tables=tuple(sorted(read)))


def _tables_read(root: exp.Expression, allowed: set[str]) -> set[str]:
    """The plant tables the query names; QueryRefused for anything else in a FROM or JOIN."""
    ctes = {cte.alias_or_name.lower() for cte in root.find_all(exp.CTE)}
    read = set()
    for table in root.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryRefused("refused: table functions (read_csv, a file, a URL) are not allowed; "
                               "query the plant's tables by name")
        if table.args.get("db") or table.args.get("catalog"):
            raise QueryRefused(f"refused: {table.sql()!r}: name a plant table without a schema")
        name = table.name.lower()
        if name in ctes:
            continue
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise QueryRefused(f"refused: {table.name[:60]!r} is not one of the plant's tables ({known})")
        read.add(name)
    return read


def _check_functions(root: exp.Expression) -> None:
    for function in root.find_all(exp.Func):
        name = function.name.lower() if isinstance(function, exp.Anonymous) else function.sql_name()
        if name not in ALLOWED_FUNCTIONS:
            raise QueryRefused(f"refused: function {name[:40]} is not on the allow-list")


def one_line(exc: BaseException) -> str:
    """An exception's message as one short line (sqlglot's span several, with ANSI colour codes)."""
    text = " ".join(str(exc).replace("\x1b[4m", "").replace("\x1b[0m", "").split())
    return text[:160] or type(exc).__name__
