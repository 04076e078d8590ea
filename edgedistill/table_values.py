"""Which table and column a question's words name: `'Label sensor' is fmea.component`, found in the tables, not guessed.

The schema shows a few values of each short column, but not the 150 work orders or the 40 components. Asked "What
is the RPN of the label sensor?", a small student must guess whether "label sensor" is a component, a piece of
equipment or a failure mode; on the shipped plant's held-out questions that guess was most of its mistakes. Text-to-
SQL systems link the question's words to the database's values before writing the query (BRIDGE, Lin et al. 2020;
CodeS, Li et al. 2024); this is that step, exact and small: every distinct short text value of every table is
looked for in the question as whole words, and the longest matches are named with their table and column in one
line under the question:

    What is the RPN of the label sensor?
    (in the tables: 'Label sensor' is fmea.component)

With `names` (knowledge.name_hints) the question's words for a column or a table are linked too, and a name several
tables hold is narrowed to the table the question's other words point at. On a table the student never trained on
(plant_tables:dev_table) half its misses queried a trained table that shares a name ('D. Okafor' is an FMEA owner
and a vibration analyst) for a column only the new table has ("alarm mm/s"); schema linking is the same step for
the schema's own names (RAT-SQL, Wang et al. 2020):

    Total alarm mm/s for D. Okafor?
    (in the tables: 'alarm mm/s' is the column vibration_survey.alarm_mm_s; 'D. Okafor' is vibration_survey.analyst)

Read with the same locked tool as the model's queries; an index is built once per tool.
"""
from __future__ import annotations

import dataclasses
import re
import weakref
from collections import Counter
from dataclasses import dataclass

from edgedistill.table_base import TableTool, call

MAX_VALUES_PER_COLUMN = 5000   # a column with more distinct values (free text, serial numbers) is not indexed
MAX_VALUE_CHARS = 40
MAX_HINTS = 4
MAX_NAME_HINTS = 3             # column and table names linked under one question (names=True)
CASE_SENSITIVE_BELOW = 3       # "A", "C", "L2": matched only as written, so the article "a" is not a shift
VALUE, COLUMN, TABLE = "value", "column", "table"
NOT_A_NAME = {"id", "no", "on", "at", "by", "of", "the", "to", "in", "for", "and", "or", "is", "s"}

# Headers that are abbreviations a plant engineer would not say: questions use the word, the query the column, so
# the student learns to link "severity" to a sheet's SEV (a 300-row PFMEA's severity questions failed on `sev`).
SPELLED_OUT = {"sev": "severity", "occ": "occurrence", "det": "detection", "qty": "quantity", "desc": "description",
               "resp": "responsible", "loc": "location", "dept": "department", "temp": "temperature",
               "pn": "part number", "wo": "work order"}


def said_name(name: str) -> str:
    """A column or table name as a question says it: failure_mode -> failure mode, rpn -> RPN, potential_cause_s
    (a sheet's "Potential Cause(s)") -> potential cause, but velocity_mm_s (mm/s) -> velocity mm s; sev ->
    severity (SPELLED_OUT)."""
    if name in SPELLED_OUT:
        return SPELLED_OUT[name]
    text = re.sub(r"(?<=[a-z]{3})_s$", "", name).replace("_", " ")
    return text.upper() if len(text) <= 3 and not set(text) & set("aeiou") else text


def name_pattern(phrase: str) -> re.Pattern:
    """A name's words as a question may write them: any case, any punctuation between the words ("alarm mm/s" for
    alarm_mm_s), a plural on the last word ("failure modes")."""
    parts = [re.escape(word) for word in phrase.lower().split()]
    if len(parts[-1]) >= 3 and parts[-1].isalpha():
        parts[-1] += "(?:e?s)?"
    return re.compile(r"(?<![A-Za-z0-9])" + r"[\W_]+".join(parts) + r"(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    """A question's words (`value`) found in the tables: a value of `table`.`column`, or the name of a column or of
    a table (`kind`; a table's link has no column)."""
    value: str
    table: str
    column: str = ""
    kind: str = VALUE

    @property
    def pattern(self) -> re.Pattern:
        """A value as whole words, case aside except for a short one (CASE_SENSITIVE_BELOW); a name by name_pattern."""
        if self.kind != VALUE:
            return name_pattern(self.value)
        flags = 0 if len(self.value) < CASE_SENSITIVE_BELOW else re.IGNORECASE
        return re.compile(rf"(?<!\w){re.escape(self.value)}(?!\w)", flags)


def name_links(tool: TableTool) -> list[Link]:
    """Each table's and column's name as a question may say it: as said_name says it and as written, underscores
    apart (sev: "severity" and "sev"); a name of short words only ("id", "no") is not linked."""
    links = []
    for table in tool.tables:
        places = [(table.name, "", TABLE)] + [(column.name, column.name, COLUMN) for column in table.columns]
        for name, column, kind in places:
            for phrase in dict.fromkeys([said_name(name).lower(), name.replace("_", " ").lower()]):
                if set(phrase.split()) - NOT_A_NAME:
                    links.append(Link(phrase, table.name, column, kind))
    return links


class ValueIndex:
    """The short text values of a tool's tables, each with where it is; with `names`, their column and table names
    too."""

    def __init__(self, tool: TableTool, names: bool = False):
        self.names = names
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
        if names:
            self.links += name_links(tool)
        self.links.sort(key=lambda link: -len(link.value))     # the longest first: "Cap chute" before "Cap"
        self._patterns = [link.pattern for link in self.links]  # compiled once: a question is read against all

    def find(self, question: str, shown=None) -> list[Link]:
        """Every place of the values the question names, in the tables `shown` (None: all): at most MAX_HINTS
        values, the longest first, none inside a longer one found; a value several columns hold (equipment in
        four tables) is linked to each. With `names`, the column and table names it says too (MAX_NAME_HINTS, as
        the question writes them), and each narrowed to the tables most of its words point at."""
        found, taken, said = [], [], {}
        for link, pattern in zip(self.links, self._patterns):
            if shown is not None and link.table not in shown:
                continue
            is_name = link.kind != VALUE
            key = (is_name, link.value.lower())
            if key in said:
                found.append(dataclasses.replace(link, value=said[key]) if is_name else link)
                continue
            if sum(name == is_name for name, _ in said) >= (MAX_NAME_HINTS if is_name else MAX_HINTS):
                continue
            match = pattern.search(question)
            if match is None or self._overlaps(match, taken):
                continue
            taken.append(match.span())
            said[key] = match.group(0) if is_name else link.value
            found.append(dataclasses.replace(link, value=said[key]))
        return narrowed(found) if self.names else found

    def _overlaps(self, match: re.Match, taken: list[tuple[int, int]]) -> bool:
        """Inside a longer match found before (with names, also one that starts before it and runs into it)."""
        return any(start <= match.start() < end or (self.names and match.start() <= start < match.end())
                   for start, end in taken)


_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def index_of(tool: TableTool, names: bool = False) -> ValueIndex:
    """The tool's index, built once per open tool (an evaluation asks several benchmarks over the same tables)."""
    built = _INDEXES.setdefault(tool, {})
    if names not in built:
        built[names] = ValueIndex(tool, names=names)
    return built[names]


def narrowed(found: list[Link]) -> list[Link]:
    """Each name's places cut to the tables the most of the question's names point at, where it has a place there
    (a join's other table keeps its own): "alarm mm/s ... D. Okafor" keeps vibration_survey's analyst, not the FMEA's
    owner of the same name."""
    places: dict[tuple, list[Link]] = {}
    for link in found:
        places.setdefault((link.kind, link.value.lower()), []).append(link)
    votes = Counter(table for links in places.values() for table in {link.table for link in links})
    if len(places) < 2 or not votes:
        return found
    most = max(votes.values())
    top = {table for table, count in votes.items() if count == most}
    return [link for links in places.values() for link in ([one for one in links if one.table in top] or links)]


def hint_line(links: list[Link]) -> str | None:
    """`(in the tables: 'Label sensor' is fmea.component; 'Capper' is fmea.equipment, spare_parts.equipment)`, or
    None: each value once, with every column that holds it; a name as `'alarm mm/s' is the column t.c` or
    `'vibration survey' is the table t`."""
    if not links:
        return None
    places: dict[tuple, list[str]] = {}
    for link in links:
        places.setdefault((link.kind, link.value), []).append(
            link.table if link.kind == TABLE else f"{link.table}.{link.column}")
    said = {VALUE: "", COLUMN: "the column ", TABLE: "the table "}
    return "(in the tables: " + "; ".join(f"'{value}' is {said[kind]}{', '.join(where)}"
                                          for (kind, value), where in places.items()) + ")"
