"""The second lock's time and memory bounds, by construction: the read-only connection lives in a child process,
and a query that runs past its hard limit is ended by killing that process.

DuckDB's interrupt (the time limit inside the engine) stops a query between its operators, and its memory cap
covers its buffers. One scalar call that builds a huge value is stopped by neither: `SELECT range(1000000000)`,
found by the long SQL fuzz profile, ran 82 s on the connection alone against a 2 s limit. The first lock (the
parser's allow-list) refuses it, but each lock should hold on its own. So the connection is opened in a child
process with a cap on its address space; the parent waits HARD_LIMIT_S for an answer, then kills the child and
starts a fresh one for the next query. A query the engine crashes on ends the same way: one line, no traceback.

    worker = QueryWorker("tables.duckdb")
    worker.run("SELECT rpn FROM fmea")          # (columns, rows, truncated), or QueryFailed
"""
from __future__ import annotations

import multiprocessing
import threading

from edgedistill.sqlguard import one_line
from edgedistill.table_base import MAX_ROWS, MEMORY_LIMIT, TIME_LIMIT_S, QueryFailed

HARD_LIMIT_S = 2 * TIME_LIMIT_S + 1     # the interrupt gets its chance first; the kill is the bound
READY_LIMIT_S = 60.0                    # a fresh child: start Python, import duckdb, open the file
ADDRESS_SPACE_BYTES = 4 << 30           # the child's whole address space: DuckDB's cap and anything past it

# The connection's own lock: read-only, no way out of the process, settings frozen (tables.py says why each).
LOCKED = {"threads": 1, "memory_limit": MEMORY_LIMIT, "max_temp_directory_size": "0KiB",
          "enable_external_access": False, "autoinstall_known_extensions": False,
          "autoload_known_extensions": False, "allow_community_extensions": False, "lock_configuration": True}
TIME_LIMIT = "over the time limit"


def answer_queries(database: str, pipe, time_limit_s: float) -> None:
    """The child: open the database read-only, then answer each query sent until the pipe closes."""
    import resource

    import duckdb
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    connection = duckdb.connect(database, read_only=True, config=LOCKED)
    pipe.send(("ready",))
    while True:
        try:
            sql = pipe.recv()
        except (EOFError, OSError):      # the parent closed the pipe or died: nothing left to answer
            return
        pipe.send(run_one(connection, sql, time_limit_s))


def run_one(connection, sql: str, time_limit_s: float) -> tuple:
    """("rows", columns, rows) with up to MAX_ROWS + 1 rows, or ("failed", one line, missing)."""
    cursor = connection.cursor()
    timer = threading.Timer(time_limit_s, cursor.interrupt)
    timer.start()
    try:
        result = cursor.execute(sql)
        columns = tuple(d[0] for d in result.description or ())
        return "rows", columns, [tuple(row) for row in result.fetchmany(MAX_ROWS + 1)]
    except Exception as exc:      # duckdb's errors share no base class worth naming; all are the query's
        text = str(exc).lower()
        stopped = TIME_LIMIT if "interrupt" in text else \
            "over the memory limit" if "out of memory" in text or isinstance(exc, MemoryError) else one_line(exc)
        missing = type(exc).__name__ == "BinderException" and "not found" in text
        return "failed", f"the query failed: {stopped}", missing
    finally:
        timer.cancel()
        cursor.close()


class QueryWorker:
    """One child process holding the read-only connection; started on the first query, restarted after a kill."""

    def __init__(self, database: str, *, time_limit_s: float = TIME_LIMIT_S, hard_limit_s: float = HARD_LIMIT_S):
        self.database, self.time_limit_s, self.hard_limit_s = database, time_limit_s, hard_limit_s
        self._process = None
        self._pipe = None

    def run(self, sql: str) -> tuple[tuple[str, ...], list[tuple]]:
        """The query's columns and up to MAX_ROWS + 1 rows; QueryFailed for the engine's error, the time limit
        (the child killed) or a child that died on it."""
        if self._process is None:
            self._start()
        try:
            self._pipe.send(sql)
            answered = self._pipe.poll(self.hard_limit_s)
            reply = self._pipe.recv() if answered else None
        except (EOFError, OSError):
            self.stop()
            raise QueryFailed("the query failed: the engine stopped on it") from None
        if reply is None:
            self.stop()
            raise QueryFailed(f"the query failed: {TIME_LIMIT}")
        if reply[0] == "failed":
            raise QueryFailed(reply[1], missing=reply[2])
        return reply[1], reply[2]

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")   # no fork of a process that holds DuckDB's threads
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=answer_queries, args=(self.database, child_end, self.time_limit_s),
                                         daemon=True, name="edgedistill-query")
        self._process.start()
        child_end.close()
        if not self._pipe.poll(READY_LIMIT_S) or self._ready() != ("ready",):
            self.stop()
            raise QueryFailed("the query failed: the table engine did not start")

    def _ready(self):
        try:
            return self._pipe.recv()
        except (EOFError, OSError):
            return None

    def stop(self) -> None:
        """Kill the child (a query past its limit, or closing): the next query starts a fresh one."""
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
            self._pipe.close()
        self._process, self._pipe = None, None
