"""Queries in the model's text: `[[SELECT ... => result]]`, the table tool's counterpart of `<<expr=value>>`.

The model writes `[[` , one SELECT, and `=>`; the runtime runs the query on the plant's tables (tables.py) and
writes the result and `]]`; the model goes on from there. On the Answer line:

    Answer: [[SELECT rpn FROM fmea WHERE component ILIKE 'seal' => 126]]

A person reads `126` (readable), the page shows the query and the rows under it. The result is written in one
line: a row's values joined by ", ", rows by "; ", at most MAX_SHOWN_ROWS rows and a count beyond; no rows, or a
column the tables do not have, is "not in the tables"; a refused or failed query its one-line reason. Only the runtime writes what follows `=>`, so
the model is trained on exactly the tokens it writes at inference (encode_completion splits there).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgedistill.table_base import TableTool, ToolCall

QUERY_OPEN, QUERY_ARROW, QUERY_CLOSE = "[[", "=>", "]]"
QUERY_ANNOTATION = re.compile(r"\[\[((?:(?!\]\]|=>).)*)=>((?:(?!\]\]).)*)\]\]", re.S)
NOT_IN_TABLES = "not in the tables"
MAX_SHOWN_ROWS = 8
MAX_RESULT_CHARS = 400
# Characters a cell may not carry into the model's text: they would end the annotation or read as another one.
_MARKUP = re.compile(r"\[\[|\]\]|<<|>>|=>|;")


def open_query(text: str) -> str | None:
    """The query of an annotation the text has just opened and not yet filled (`...[[SELECT ... =>`), else None."""
    start = text.rfind(QUERY_OPEN)
    if start < 0 or not text.endswith(QUERY_ARROW) or QUERY_CLOSE in text[start:]:
        return None
    query = text[start + len(QUERY_OPEN):-len(QUERY_ARROW)]
    return query if QUERY_ARROW not in query else None


def result_text(done: "ToolCall") -> str:
    """What the runtime writes after `=>` (before `]]`): the rows in one line, "not in the tables" (no rows, or a
    column the tables do not have: the page still shows the engine's words), or why the query did not run."""
    if done.missing:
        return NOT_IN_TABLES
    if done.error is not None:
        return _clean(done.error)
    if not done.cells:
        return NOT_IN_TABLES
    shown = "; ".join(", ".join(_clean(cell) for cell in row) for row in done.cells[:MAX_SHOWN_ROWS])
    total = len(done.cells)
    if total > MAX_SHOWN_ROWS or done.result.truncated:
        shown += f"; ... ({'more than ' if done.result.truncated else ''}{total} rows)"
    return shown if len(shown) <= MAX_RESULT_CHARS else shown[:MAX_RESULT_CHARS] + "..."


def _clean(value: str) -> str:
    return _MARKUP.sub(lambda m: "," if m.group() == ";" else " ", value).strip()


def fill_for(text: str, tool: "TableTool") -> str | None:
    """What the runtime appends after `text` (` result]]`), or None when no query is waiting for its result."""
    query = open_query(text)
    if query is None:
        return None
    from edgedistill.table_base import call
    return " " + result_text(call(tool, query)) + QUERY_CLOSE


def first_wrong_fill(text: str, tool: "TableTool") -> tuple[int, str] | None:
    """(cut, fill) for the first query whose result is not what the tool returns (or that was left open): keep
    text[:cut], up to and including its `=>`, and append `fill`. For engines that decode in their own loop."""
    position = 0
    while True:
        start = text.find(QUERY_OPEN, position)
        arrow = text.find(QUERY_ARROW, start) if start >= 0 else -1
        if arrow < 0:
            return None
        cut = arrow + len(QUERY_ARROW)
        fill = fill_for(text[:cut], tool)
        closed = QUERY_ANNOTATION.match(text, start)
        if fill is not None and (closed is None or text[cut:closed.end()] != fill):
            return cut, fill
        position = closed.end() if closed else cut


def queries(text: str) -> list[str]:
    """The queries of a completion's closed annotations, in order, each once."""
    return list(dict.fromkeys(match.group(1).strip() for match in QUERY_ANNOTATION.finditer(text)))


def readable(text: str) -> str:
    """Each `[[query => result]]` as its result; a half-written one is hidden."""
    text = QUERY_ANNOTATION.sub(lambda m: m.group(2).strip(), text)
    return text[:text.rindex(QUERY_OPEN)] if QUERY_OPEN in text else text


def result_rows(answer: str) -> list[str]:
    """The rows of a result written in one line, as a set is compared: each row's words, repeats dropped, sorted
    (a query with DISTINCT and one without return the same set)."""
    return sorted({" ".join(re.sub(r"[^\w.\-]+", " ", row.lower()).split()) for row in answer.split(";")
                   if row.strip()})
