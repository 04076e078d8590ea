"""Which column holds the names a question uses: `'Label sensor' is fmea.component`, found in the tables, not guessed.

The schema shows a few values of each short column, but not the 150 work orders or the 40 components. Asked "What
is the RPN of the label sensor?", a small student must guess whether "label sensor" is a component, a piece of
equipment or a failure mode; on the shipped plant's held-out questions that guess was most of its mistakes. Text-to-
SQL systems link the question's words to the database's values before writing the query (BRIDGE, Lin et al. 2020;
CodeS, Li et al. 2024); this is that step, exact and small: every distinct short text value of every table is
looked for in the question as whole words, and the longest matches are named with their table and column in one
line under the question:

    What is the RPN of the label sensor?
    (in the tables: 'Label sensor' is fmea.component)

Read with the same locked tool as the model's queries; an index is built once per tool.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from edgedistill.table_base import TableTool, call

MAX_VALUES_PER_COLUMN = 5000   # a column with more distinct values (free text, serial numbers) is not indexed
MAX_VALUE_CHARS = 40
MAX_HINTS = 4
CASE_SENSITIVE_BELOW = 3       # "A", "C", "L2": matched only as written, so the article "a" is not a shift


@dataclass(frozen=True)
class Link:
    value: str
    table: str
    column: str

    @property
    def pattern(self) -> re.Pattern:
        """The value as whole words: case aside, except for a short one (CASE_SENSITIVE_BELOW)."""
        flags = 0 if len(self.value) < CASE_SENSITIVE_BELOW else re.IGNORECASE
        return re.compile(rf"(?<!\w){re.escape(self.value)}(?!\w)", flags)


class ValueIndex:
    """The short text values of a tool's tables, each with where it is."""

    def __init__(self, tool: TableTool):
        self.links: list[Link] = []
        for table in tool.tables:
            for column in table.columns:
                if column.type != "text":
                    continue
                done = call(tool, f"SELECT DISTINCT {column.name} FROM {table.name} WHERE {column.name} IS NOT NULL "
                                  f"LIMIT {MAX_VALUES_PER_COLUMN + 1}")
                if done.error or len(done.cells) > MAX_VALUES_PER_COLUMN:
                    continue
                self.links += [Link(row[0], table.name, column.name) for row in done.cells
                               if 0 < len(row[0]) <= MAX_VALUE_CHARS]
        self.links.sort(key=lambda link: -len(link.value))     # the longest first: "Cap chute" before "Cap"
        self._patterns = [link.pattern for link in self.links]  # compiled once: a question is read against all

    def find(self, question: str) -> list[Link]:
        """Every place of the values the question names: at most MAX_HINTS values, the longest first, none inside
        a longer one found; a value several columns hold (equipment in four tables) is linked to each."""
        found, taken, values = [], [], set()
        for link, pattern in zip(self.links, self._patterns):
            if link.value.lower() in values:
                found.append(link)
                continue
            match = pattern.search(question)
            if match is None or any(start <= match.start() < end for start, end in taken) or \
                    len(values) >= MAX_HINTS:
                continue
            taken.append(match.span())
            values.add(link.value.lower())
            found.append(link)
        return found


def hint_line(links: list[Link]) -> str | None:
    """`(in the tables: 'Label sensor' is fmea.component; 'Capper' is fmea.equipment, spare_parts.equipment)`, or
    None: each value once, with every column that holds it."""
    if not links:
        return None
    places: dict[str, list[str]] = {}
    for link in links:
        places.setdefault(link.value, []).append(f"{link.table}.{link.column}")
    return "(in the tables: " + "; ".join(f"'{value}' is {', '.join(where)}" for value, where in places.items()) + ")"
