"""Questions about a plant's tables, written by rule from the tables alone and verified by construction.

For each table the columns are sorted into roles from their types and values: keys (a text column whose values
identify a row), categories (a text column with a few repeated values: equipment, line, cause), numbers and
dates. A question kind pairs roles with a query and several wordings:

    lookup      the value of a column in the row a key names          SELECT c FROM t WHERE k ILIKE 'v'
    lookup2     the same, the row named by two columns                ... WHERE g ILIKE 'gv' AND k ILIKE 'v'
    list        the keys of a category                                SELECT k FROM t WHERE g ILIKE 'gv'
    filter      the keys past a threshold                             SELECT k FROM t WHERE c >= n
    top         the key with the highest or lowest value, or top 3   ... ORDER BY c DESC LIMIT 1
    count, sum, average   over a category                             SELECT count(*) / sum(c) ... WHERE g ...
    group_top   the category with the largest total                   ... GROUP BY g ORDER BY sum(c) DESC LIMIT 1
    month       totals and counts in a month                          ... WHERE d >= '2025-03-01' AND d < ...
    join        a column of another table through a shared key        ... JOIN b ON a.k2 = b.k2 WHERE a.k ...
    absent      a lookup of something the tables do not hold          -> "not in the tables"

A question is kept when its query runs through the same locked tool the student uses and returns at least one
row and at most MAX_SHOWN_ROWS (an absent lookup: none), with no tie at a ranking's cut. Its answer is the rows as
the tool writes them. Wordings come in two pools, `train` and `heldout`, so dev and held-out splits can be worded
apart from training; a question's topic is `<kind>/<pool>`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from edgedistill.records import Question
from edgedistill.table_base import MAX_ROWS
from edgedistill.table_queries import MAX_SHOWN_ROWS, result_text
from edgedistill.tables import TableInfo, TableTool, call
from edgedistill.table_values import MAX_VALUE_CHARS
from edgedistill.table_values import said_name as words  # a name as a question says it

MAX_CATEGORY_VALUES = 12
# A bigger sheet repeats more values: a column with up to rows/12 distinct values still groups rows (a 300-row
# PFMEA's 16 failure modes), so counts, sums and averages are asked by it too.
ROWS_PER_CATEGORY_VALUE = 12
# A bigger sheet names a row by three columns (a PFMEA's process step, failure mode and cause): its lookups say all
# three (a 300-row PFMEA's flow lost 6 of 80 questions by dropping one). Smaller tables keep two, so the shipped
# plant's splits are as they were.
LOOKUP3_MIN_ROWS = 200
MAX_SAMPLED_ROWS = 2000
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
ABSENT_VALUES = ["Pasteuriser", "Boiler 3", "Line 9", "Shrink tunnel", "XR-9999", "Compressor 4", "Mixer"]

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "lookup": {
        "train": ["What is the {c} of {v}?", "In the {t}, what {c} does {v} have?", "Look up the {c} for {k} {v}.",
                  "What {c} is recorded for {v}?", "{v}: what is its {c}?", "Give me the {c} of {k} {v}."],
        "heldout": ["Can you tell me which {c} the {t} lists for {v}?", "I need the {c} for {v}, please.",
                    "{c} of {v}?"]},
    "lookup2": {
        "train": ["What is the {c} of {v} on the {gv}?", "For the {gv}, what {c} has {v}?",
                  "What {c} does the {t} give for {v} on the {gv}?", "Look up the {c} of {gv} {v}."],
        "heldout": ["On the {gv}, what's the {c} for {v}?", "{gv}, {v}: which {c}?"]},
    "lookup3": {
        "train": ["What is the {c} of {v} with {v2} in {gv}?", "For {gv}, what {c} does the {t} give for {v} and {v2}?",
                  "Look up the {c} where {g} is {gv}, {k} is {v} and {k2} is {v2}.",
                  "What {c} is recorded for {v} ({v2}) in {gv}?"],
        "heldout": ["In {gv}, what's the {c} for {v} with {v2}?", "{gv}, {v}, {v2}: which {c}?"]},
    "list": {
        "train": ["List the {k} for {gv}.", "Which {k} values does the {t} have for {gv}?",
                  "What {k} entries are there for {g} {gv}?", "Show every {k} where {g} is {gv}."],
        "heldout": ["Give me all the {k} values listed under {gv}.", "{gv}: which {k}?"]},
    "filter": {
        "train": ["Which {k} have a {c} of {n} or more?", "List every {k} with {c} at least {n}.",
                  "Which {k} have {c} above {n}?", "Which {k} have a {c} below {n}?"],
        "heldout": ["Show me the {k} whose {c} is {n} or higher.", "Any {k} with {c} under {n}?"]},
    "top": {
        "train": ["Which {k} has the highest {c}?", "Which {k} has the lowest {c}?",
                  "What are the 3 {k} with the highest {c}?", "Name the {k} with the largest {c} in the {t}."],
        "heldout": ["Top {c}: which {k}?", "Which {k} comes out lowest on {c}?"]},
    "count": {
        "train": ["How many entries in the {t} have {g} {gv}?", "Count the {t} rows where {g} is {gv}.",
                  "How many {t} records are for {gv}?", "What is the number of {t} entries with {g} {gv}?"],
        "heldout": ["How often does {gv} appear in the {t}?", "Number of {gv} entries in the {t}?"]},
    "sum": {
        "train": ["What is the total {c} for {gv}?", "Add up the {c} of all {t} entries with {g} {gv}.",
                  "How much {c} in total is logged for {gv}?", "What is the sum of {c} where {g} is {gv}?"],
        "heldout": ["Total {c} for {gv}?", "All together, how much {c} did {gv} account for?"]},
    "average": {
        "train": ["What is the average {c} for {gv}, to 1 decimal place?",
                  "What is the mean {c} of the {t} entries with {g} {gv}, to 1 decimal?"],
        "heldout": ["On average, how much {c} per entry for {gv}? One decimal, please."]},
    "group_top": {
        "train": ["Which {g} has the highest total {c}?", "Which {g} adds up to the most {c}?",
                  "Which {g} has the most entries in the {t}?"],
        "heldout": ["Where does most of the {c} come from, by {g}?", "Which {g} shows up most often in the {t}?"]},
    "month": {
        "train": ["What is the total {c} in {m} {y}?", "How many {t} entries were logged in {m} {y}?",
                  "What is the total {c} for {gv} in {m} {y}?"],
        "heldout": ["Total {c} for {m} {y}?", "How many entries did the {t} get in {m} {y}?"]},
    "join": {
        "train": ["For {k} {v} in the {t}, what is the {c} of its {j}?", "What {c} has the {j} used on {k} {v}?"],
        "heldout": ["{k} {v}: what's the {c} of the {j} on it?"]},
    "absent": {
        "train": ["What is the {c} of {v}?", "Look up the {c} for {k} {v}.", "What {c} is recorded for {v}?"],
        "heldout": ["I need the {c} for {v}, please.", "{c} of {v}?"]},
}
# How often each kind is drawn: lookups and lists are what plant engineers ask most.
KIND_WEIGHTS = {"lookup": 4, "lookup2": 4, "lookup3": 4, "list": 2, "filter": 2, "top": 2, "count": 2, "sum": 2, "average": 1,
                "group_top": 1, "month": 2, "join": 2, "absent": 1}


@dataclass
class Roles:
    table: TableInfo
    keys: list[str]           # text columns whose values identify a row
    categories: dict[str, list[str]]   # text column -> its values (a few, repeated)
    numbers: list[str]
    dates: list[str]
    values: dict[str, list[str]]       # column -> its distinct values (as the tool writes them)
    texts: list[str]                   # the text columns
    rows: list[dict[str, str]]         # a big table's rows, text columns only (LOOKUP3_MIN_ROWS); [] for a small one


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def is_key(tool: TableTool, table: TableInfo, column: str) -> bool:
    """Does the column name one row each? Counted by the engine, since its list of values stops at the row limit."""
    found = call(tool, f"SELECT count(DISTINCT {column}), count({column}) FROM {table.name}").cells
    return bool(found) and found[0][0] == found[0][1] == str(table.rows) != "0"


def roles_of(tool: TableTool, table: TableInfo) -> Roles:
    keys, categories, numbers, dates, values, texts = [], {}, [], [], {}, []
    for column in table.columns:
        if column.type in ("int", "number"):
            numbers.append(column.name)
            found = call(tool, f"SELECT DISTINCT {column.name} FROM {table.name} WHERE {column.name} IS NOT NULL")
            values[column.name] = sorted((row[0] for row in found.cells), key=float)
        elif column.type in ("date", "timestamp"):
            dates.append(column.name)
        elif column.type == "text":
            found = call(tool, f"SELECT DISTINCT {column.name} FROM {table.name} WHERE {column.name} IS NOT NULL")
            distinct = sorted(row[0] for row in found.cells if row[0] and len(row[0]) <= 40)
            values[column.name] = distinct
            texts.append(column.name)
            if is_key(tool, table, column.name):
                keys.append(column.name)
            elif 2 <= len(distinct) <= max(MAX_CATEGORY_VALUES, table.rows // ROWS_PER_CATEGORY_VALUE):
                categories[column.name] = distinct
    return Roles(table=table, keys=keys, categories=categories, numbers=numbers, dates=dates, values=values,
                 texts=texts, rows=sampled_rows(tool, table, texts))


def sampled_rows(tool: TableTool, table: TableInfo, texts: list[str]) -> list[dict[str, str]]:
    """A big table's rows (its text columns, up to MAX_SAMPLED_ROWS), read a row limit at a time: a three-column
    lookup takes its values from one row, so they name a row that exists."""
    if table.rows <= LOOKUP3_MIN_ROWS or len(texts) < 3:
        return []
    rows = []
    for offset in range(0, min(table.rows, MAX_SAMPLED_ROWS), MAX_ROWS):
        done = call(tool, f"SELECT {', '.join(texts)} FROM {table.name} LIMIT {MAX_ROWS} OFFSET {offset}")
        rows += [dict(zip(texts, cells)) for cells in done.cells]
    return rows


def rule_questions(tool: TableTool, *, seed: int, count: int, wordings: tuple[str, ...] = ("train",),
                   source: str = "rule", tables: list[str] | None = None) -> list[Question]:
    """Up to `count` distinct verified questions about the tool's tables (or those named), drawn in turn from
    each wording pool in `wordings`; each carries its query, its answer (the rows) and `<kind>/<pool>` as topic."""
    rng = random.Random(seed)
    roles = [roles_of(tool, t) for t in tool.tables if tables is None or t.name in tables]
    joins = shared_keys(tool, roles)
    kinds = [kind for kind, weight in KIND_WEIGHTS.items() for _ in range(weight)
             if kind != "lookup3" or any(role.rows for role in roles)]
    seen, out, tries = set(), [], 0
    while len(out) < count and tries < count * 40:
        tries += 1
        pool = wordings[len(out) % len(wordings)]
        kind, role = rng.choice(kinds), rng.choice(roles)
        template = rng.choice(TEMPLATES[kind][pool])
        drawn = draw(kind, template, role, joins, rng)
        if drawn is None:
            continue
        query, fields = drawn
        question = template.format(t=words(role.table.name), **{k: v for k, v in fields.items() if k[0] != "_"})
        question = question[0].upper() + question[1:]
        if question.lower() in seen:
            continue
        done = call(tool, query)
        if done.error is not None or not fits(kind, done, template) or tied(tool, fields.get("_tie")):
            continue
        seen.add(question.lower())
        out.append(Question(id=f"rule-{len(out) + 1}", question=question, answer=result_text(done),
                            answer_type="rows", query=query, topic=f"{kind}/{pool}", source=source))
    return out


def tied(tool: TableTool, check: str | None) -> bool:
    """Does a ranking's cut fall between equal values? `check` lists the ranked values one past the cut."""
    if check is None:
        return False
    cells = call(tool, check).cells
    return len(cells) >= 2 and cells[-1] == cells[-2]


def fits(kind: str, done, template: str) -> bool:
    if kind == "absent":
        return not done.cells
    if not 1 <= len(done.cells) <= MAX_SHOWN_ROWS or any(cell == "null" for row in done.cells for cell in row):
        return False
    return kind not in ("lookup", "lookup2", "lookup3", "join") or len(done.cells) == 1


def draw(kind: str, template: str, role: Roles, joins: list[tuple], rng: random.Random) -> tuple[str, dict] | None:
    """(query, the template's fields) for one question of `kind` in the wording `template` about one table, or
    None when the table has no roles for it. Each branch is the query and the values its wording shows; where a
    wording says which way (above, lowest, how many), the query follows it."""
    said = template.lower()
    t = role.table.name
    category = rng.choice(sorted(role.categories)) if role.categories else None
    group_value = rng.choice(role.categories[category]) if category else None
    shown = (group_value.lower() if rng.random() < 0.3 else group_value) if category else None
    if kind in ("lookup", "absent") and role.keys:
        key = rng.choice(role.keys)
        target = rng.choice([c.name for c in role.table.columns if c.name != key])
        value = rng.choice(ABSENT_VALUES) if kind == "absent" else rng.choice(role.values[key])
        return (f"SELECT {target} FROM {t} WHERE {key} ILIKE {sql_text(value)}",
                {"c": words(target), "k": words(key), "v": value})
    if kind == "lookup2" and category:
        names = [c for c in role.values if c != category and len(role.values[c]) > MAX_CATEGORY_VALUES // 2]
        if not names:
            return None
        key = rng.choice(names)
        value = rng.choice(role.values[key])
        target = rng.choice([c.name for c in role.table.columns if c.name not in (key, category)])
        return (f"SELECT {target} FROM {t} WHERE {category} ILIKE {sql_text(shown)} AND {key} ILIKE {sql_text(value)}",
                {"c": words(target), "k": words(key), "v": value, "g": words(category), "gv": shown})
    if kind == "lookup3" and category and role.rows:
        return _lookup3(role, category, rng)
    names = [c for c in role.texts if c != category]
    key = rng.choice(role.keys or names) if names else None
    number = rng.choice(role.numbers) if role.numbers else None
    if kind == "list" and category and key:
        return (f"SELECT {key} FROM {t} WHERE {category} ILIKE {sql_text(shown)}",
                {"k": words(key), "g": words(category), "gv": shown})
    if kind == "filter" and key and number:
        threshold = rng.choice(role.values[number])
        op = ">=" if ("or more" in said or "at least" in said or "or higher" in said) else \
            ">" if "above" in said else "<"
        return (f"SELECT {key} FROM {t} WHERE {number} {op} {threshold}",
                {"k": words(key), "c": words(number), "n": threshold, "_op": op})
    if kind == "top" and key and number:
        order = "ASC" if "lowest" in said else "DESC"
        limit = 3 if "3" in said else 1
        return (f"SELECT {key} FROM {t} ORDER BY {number} {order} LIMIT {limit}",
                {"k": words(key), "c": words(number),
                 "_tie": f"SELECT {number} FROM {t} ORDER BY {number} {order} LIMIT {limit + 1}"})
    if kind == "count" and category:
        return (f"SELECT count(*) FROM {t} WHERE {category} ILIKE {sql_text(shown)}",
                {"g": words(category), "gv": shown})
    if kind in ("sum", "average") and category and number:
        aggregate = f"sum({number})" if kind == "sum" else f"round(avg({number}), 1)"
        return (f"SELECT {aggregate} FROM {t} WHERE {category} ILIKE {sql_text(shown)}",
                {"c": words(number), "g": words(category), "gv": shown})
    if kind == "group_top" and category and ("entries" in said or "often" in said):
        return (f"SELECT {category} FROM {t} GROUP BY {category} ORDER BY count(*) DESC LIMIT 1",
                {"g": words(category), "_tie": f"SELECT count(*) FROM {t} GROUP BY {category} ORDER BY 1 DESC LIMIT 2"})
    if kind == "group_top" and category and number:
        return (f"SELECT {category} FROM {t} GROUP BY {category} ORDER BY sum({number}) DESC LIMIT 1",
                {"c": words(number), "g": words(category),
                 "_tie": f"SELECT sum({number}) FROM {t} GROUP BY {category} ORDER BY 1 DESC LIMIT 2"})
    if kind == "month" and role.dates and number:
        return _month(role, number, category, shown, said, rng)
    if kind == "join" and joins:
        candidates = [j for j in joins if j[0] is role]
        if candidates:
            return _join(rng.choice(candidates), rng)
    return None


def _month(role: Roles, number: str, category: str | None, shown: str | None, said: str, rng: random.Random):
    date = rng.choice(role.dates)
    year, month = 2025, rng.randint(1, 6)
    start, end = f"{year}-{month:02d}-01", f"{year + month // 12}-{month % 12 + 1:02d}-01"
    where = f"{date} >= '{start}' AND {date} < '{end}'"
    fields = {"c": words(number), "m": MONTHS[month - 1], "y": year, "g": words(category or ""), "gv": shown}
    if "how many" in said:
        return f"SELECT count(*) FROM {role.table.name} WHERE {where}", fields
    if "{gv}" not in said:
        return f"SELECT sum({number}) FROM {role.table.name} WHERE {where}", fields
    if not category:
        return None
    return (f"SELECT sum({number}) FROM {role.table.name} WHERE {category} ILIKE {sql_text(shown)} AND {where}",
            fields)


def _lookup3(role: Roles, category: str, rng: random.Random):
    """A row named by its category and two more of its text columns, all three from one row of the table."""
    names = [c for c in role.texts if c != category and len(role.values[c]) > MAX_CATEGORY_VALUES // 2]
    if len(names) < 2:
        return None
    first, second = rng.sample(names, 2)
    row = rng.choice(role.rows)
    if any(row[c] in ("", "null") or len(row[c]) > MAX_VALUE_CHARS for c in (category, first, second)):
        return None
    target = rng.choice([c.name for c in role.table.columns if c.name not in (category, first, second)])
    where = " AND ".join(f"{c} ILIKE {sql_text(row[c])}" for c in (category, first, second))
    return (f"SELECT {target} FROM {role.table.name} WHERE {where}",
            {"c": words(target), "g": words(category), "gv": row[category], "k": words(first), "v": row[first],
             "k2": words(second), "v2": row[second]})


def shared_keys(tool: TableTool, roles: list[Roles]) -> list[tuple]:
    """(role of A, the column A shares, role of B, B's key of that name): A's rows point at one row of B each."""
    joins = []
    for a in roles:
        for b in roles:
            for column in b.keys:
                if a is not b and column in a.values and a.keys and set(a.values[column]) & set(b.values[column]):
                    joins.append((a, column, b, column))
    return joins


def _join(join: tuple, rng: random.Random):
    a, shared, b, _ = join
    key = rng.choice(a.keys)
    value = rng.choice(a.values[key])
    target = rng.choice([c.name for c in b.table.columns if c.name != shared])
    query = (f"SELECT b.{target} FROM {a.table.name} AS a JOIN {b.table.name} AS b ON a.{shared} = b.{shared} "
             f"WHERE a.{key} ILIKE {sql_text(value)}")
    return query, {"k": words(key), "v": value, "c": words(target), "j": words(shared)}
