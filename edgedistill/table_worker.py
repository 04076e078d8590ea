"""The second lock's time and memory bounds, by construction: the read-only connection lives in a child process,
and a query that runs past its hard limit is ended by killing that process.

DuckDB's interrupt (the time limit inside the engine) stops a query between its operators, and its memory cap
covers its buffers. One scalar call that builds a huge value is stopped by neither: `SELECT range(1000000000)`,
found by the long SQL fuzz profile, ran 82 s on the connection alone against a 2 s limit. The first lock (the
parser's allow-list) refuses it, but each lock should hold on its own. So the connection is opened in a child
process (`python -m edgedistill.table_worker`) with a cap on its address space; the parent waits HARD_LIMIT_S for
an answer, then kills the child and starts a fresh one for the next query. A query the engine crashes on ends the
same way: one line, no traceback.

The child is a plain subprocess, not multiprocessing: spawning re-imports the caller's main module, which a
notebook or an unguarded script cannot survive. Queries and rows cross as JSON lines; a value JSON has no type for
is tagged (a decimal, a date) and rebuilt on this side.

    worker = QueryWorker("tables.duckdb")
    worker.run("SELECT rpn FROM fmea")          # (columns, rows), or QueryFailed
"""
from __future__ import annotations

import datetime
import decimal
import json
import select
import subprocess
import sys
import threading

HARD_LIMIT_S = 5.0                      # the interrupt (TIME_LIMIT_S, 2 s) gets its chance first; the kill is the bound
READY_LIMIT_S = 60.0                    # a fresh child: start Python, import duckdb, open the file
ADDRESS_SPACE_BYTES = 4 << 30           # the child's whole address space: DuckDB's cap and anything past it
TIME_LIMIT = "over the time limit"

# The connection's own lock: read-only, no way out of the process, settings frozen (tables.py says why each).
LOCKED = {"threads": 1, "max_temp_directory_size": "0KiB", "enable_external_access": False,
          "autoinstall_known_extensions": False, "autoload_known_extensions": False,
          "allow_community_extensions": False, "lock_configuration": True}


class QueryWorker:
    """One child process holding the read-only connection; started on the first query, restarted after a kill."""

    def __init__(self, database: str, *, time_limit_s: float | None = None, hard_limit_s: float = HARD_LIMIT_S):
        from edgedistill.table_base import MAX_ROWS, MEMORY_LIMIT, TIME_LIMIT_S
        self.database, self.hard_limit_s = database, hard_limit_s
        self._argv = [sys.executable, "-m", "edgedistill.table_worker", database,
                      str(TIME_LIMIT_S if time_limit_s is None else time_limit_s), str(MAX_ROWS + 1), MEMORY_LIMIT]
        self._process: subprocess.Popen | None = None

    def run(self, sql: str) -> tuple[tuple[str, ...], list[tuple]]:
        """The query's columns and up to MAX_ROWS + 1 rows; QueryFailed for the engine's error, the time limit
        (the child killed) or a child that died on it."""
        from edgedistill.table_base import QueryFailed
        if self._process is None:
            self._start()
        try:
            self._process.stdin.write(json.dumps({"sql": sql}) + "\n")
            self._process.stdin.flush()
            line = self._reply(self.hard_limit_s)
        except (OSError, ValueError):       # the child is gone (a crash on the previous query, or killed)
            line = ""
        if line is None:
            self.stop()
            raise QueryFailed(f"the query failed: {TIME_LIMIT}")
        if not line:
            self.stop()
            raise QueryFailed("the query failed: the table engine stopped on it")
        reply = json.loads(line)
        if "error" in reply:
            raise QueryFailed(reply["error"], missing=reply["missing"])
        return tuple(reply["columns"]), [tuple(map(decoded, row)) for row in reply["rows"]]

    def _start(self) -> None:
        from edgedistill.table_base import QueryFailed
        self._process = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
        if self._reply(READY_LIMIT_S) != '{"ready": true}\n':
            self.stop()
            raise QueryFailed("the query failed: the table engine did not start")

    def _reply(self, timeout_s: float) -> str | None:
        """The child's next line; None when it has not written one in `timeout_s`, "" when it is gone."""
        readable, _, _ = select.select([self._process.stdout], [], [], timeout_s)
        return self._process.stdout.readline() if readable else None

    def stop(self) -> None:
        """Kill the child (a query past its limit, or closing): the next query starts a fresh one."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            for pipe in (self._process.stdin, self._process.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        self._process = None


def encoded(value):
    """A cell as JSON: None, bool, int, float and str as they are; a decimal or a date tagged; anything else as
    text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"date": value.isoformat()}
    return str(value)


def decoded(value):
    if isinstance(value, dict):
        (tag, text), = value.items()
        return {"decimal": decimal.Decimal, "datetime": datetime.datetime.fromisoformat,
                "date": datetime.date.fromisoformat}[tag](text)
    return value


def answer(connection, sql: str, time_limit_s: float, rows: int) -> dict:
    """One query's reply: its columns and up to `rows` rows, or its one-line error."""
    from edgedistill.sqlguard import one_line
    cursor = connection.cursor()
    timer = threading.Timer(time_limit_s, cursor.interrupt)
    timer.start()
    try:
        result = cursor.execute(sql)
        columns = [d[0] for d in result.description or ()]
        return {"columns": columns, "rows": [[encoded(v) for v in row] for row in result.fetchmany(rows)]}
    except Exception as exc:      # duckdb's errors share no base class worth naming; all are the query's
        text = str(exc).lower()
        stopped = TIME_LIMIT if "interrupt" in text else \
            "over the memory limit" if "out of memory" in text or isinstance(exc, MemoryError) else one_line(exc)
        missing = type(exc).__name__ == "BinderException" and "not found" in text
        return {"error": f"the query failed: {stopped}", "missing": missing}
    finally:
        timer.cancel()
        cursor.close()


def main(argv: list[str]) -> None:
    """The child: open the database read-only, then answer each query line until stdin closes."""
    import resource

    import duckdb
    database, time_limit_s, rows, memory_limit = argv
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    connection = duckdb.connect(database, read_only=True, config={**LOCKED, "memory_limit": memory_limit})
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(connection, json.loads(line)["sql"], float(time_limit_s), int(rows))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
