"""The table tool on a PostgreSQL server, for a plant whose tables outgrew a file: same interface, same two locks.

    knowledge.tables: ["postgresql://plant_reader@db.plant.local/maintenance"]

Give it a role that may only read (docs/tables.md shows the GRANTs). On top of the role, every query runs in a
READ ONLY transaction with a statement timeout, only SELECTs that sqlglot checked in PostgreSQL's dialect reach the
server, and at most MAX_ROWS rows are fetched. The tables are those of the connection's current schema.
"""
from __future__ import annotations

import threading

from edgedistill import UserError
from edgedistill.sqlguard import check_query, one_line
from edgedistill.table_base import (MAX_EXAMPLE_DISTINCT, MAX_ROWS, TIME_LIMIT_S, Column, QueryFailed,
                                QueryResult, TableInfo, short_examples, simple_type)

CONNECT_TIMEOUT_S = 5


class PostgresTables:
    dialect = "postgres"

    def __init__(self, url: str):
        import psycopg
        try:
            self._connection = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False)
        except psycopg.Error as exc:
            raise UserError(f"tables: cannot connect to the PostgreSQL server ({one_line(exc)}); check the URL, "
                            f"that the server runs and that the role may log in") from None
        self._connection.read_only = True          # every transaction: BEGIN READ ONLY
        self._lock = threading.Lock()
        try:
            self.tables = tuple(self._describe(name) for name in self._table_names())
        finally:
            self._connection.rollback()
        if not self.tables:
            raise UserError("tables: the PostgreSQL role sees no tables in its schema; GRANT SELECT on them")

    def _table_names(self) -> list[str]:
        rows = self._connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type IN ('BASE TABLE', 'VIEW') "
            "AND has_table_privilege(format('%I.%I', table_schema, table_name), 'SELECT') "
            "ORDER BY table_name").fetchall()
        return [name for (name,) in rows]

    def _describe(self, name: str) -> TableInfo:
        from psycopg import sql
        table = sql.Identifier(name)
        described = self._connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position", (name,)).fetchall()
        count = self._connection.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
        columns = []
        for column, engine_type in described:
            kind = simple_type(engine_type)
            examples: tuple[str, ...] = ()
            if kind == "text":
                top = self._connection.execute(sql.SQL(
                    "SELECT {c} FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {n}").format(
                    c=sql.Identifier(column), t=table, n=sql.Literal(MAX_EXAMPLE_DISTINCT + 1))).fetchall()
                examples = short_examples([str(v) for (v,) in top])
            columns.append(Column(name=column, type=kind, examples=examples))
        return TableInfo(name=name, columns=tuple(columns), rows=int(count), source=f"postgresql table {name}")

    def run(self, query: str) -> QueryResult:
        import psycopg
        checked = check_query(query, {t.name for t in self.tables}, self.dialect)
        with self._lock:
            try:
                with self._connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {int(TIME_LIMIT_S * 1000)}")
                    cursor.execute(checked.sql)
                    columns = tuple(d.name for d in cursor.description or ())
                    rows = cursor.fetchmany(MAX_ROWS + 1)
            except psycopg.errors.QueryCanceled:
                raise QueryFailed("the query failed: over the time limit") from None
            except psycopg.errors.UndefinedColumn as exc:
                raise QueryFailed(f"the query failed: {one_line(exc)}", missing=True) from None
            except psycopg.Error as exc:
                raise QueryFailed(f"the query failed: {one_line(exc)}") from None
            finally:
                self._connection.rollback()
        return QueryResult(sql=checked.sql, columns=columns, rows=tuple(map(tuple, rows[:MAX_ROWS])),
                           truncated=len(rows) > MAX_ROWS)

    def close(self) -> None:
        self._connection.close()
