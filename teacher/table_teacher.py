"""The model teacher's questions about the plant's tables (`teacher.tables.written`, `teacher.tables.rewordings`).

Rule questions (table_questions.py) are right by construction but worded by template. The model teacher adds the
plant's own voice, in two passes, each appended to its own log so a killed run resumes where it stopped:

    write    proposals.jsonl   per table, `written` new questions, each with the SQL that answers it, shown the
                               table's schema, a few of its rows and two rule questions as examples; and per
                               question (rule or written), `rewordings` other ways to ask it
    solve    solves.jsonl      each proposal that passed the checks below is answered `solves` times by the
                               teacher with the tables as a tool, as the student will be asked

Kept: a written question whose query runs (both locks) and returns rows, and the majority of whose solves return
those rows; a rewording the majority of whose solves return its seed's rows. Dropped before any solve: a proposal
without a question, a query that does not run or returns nothing, a rewording that copies its seed, and a
near-duplicate of a question already kept. Every kept record says where it came from (`source`, `topic`).
"""
from __future__ import annotations

import difflib
import math
import random
from collections import Counter

from edgedistill.answer_rules import words
from edgedistill.checkers import canonical, extract_answer
from edgedistill.formats import answer_first_target, chat
from edgedistill.generation import Sampling
from edgedistill.records import AppendLog, Question
from edgedistill.table_queries import MAX_SHOWN_ROWS, result_text
from edgedistill.tables import TableTool, call, schema_text, with_context

NEAR_COPY = 0.9          # word-sequence similarity above which a rewording copies its seed, or duplicates another
EXAMPLE_ROWS = 4
WRITE_TOKENS, SOLVE_TOKENS = 120, 128

WRITE_PROMPT = ("Here is a table from a bottling plant's records.\n{schema}\nSome of its rows:\n{rows}\n\n"
                "Two questions an engineer asked about it, each with the SQL that answers it:\n{examples}\n"
                "Write one new question about this table in an engineer's own words, about other rows or values, "
                "then the SQL that answers it, in the same format.\nQuestion:")
REWORD_PROMPT = ("Rewrite this question the way an engineer on the shop floor might type it: other words, the "
                 "same meaning, every name, number and date kept exactly as written.\nQuestion: {question}\n"
                 "Rewritten question:")


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, words(a), words(b)).ratio()


def parse_written(text: str) -> tuple[str, str] | None:
    """(question, query) from `... question ...\\nSQL: SELECT ...`, or None."""
    head, marker, tail = text.partition("SQL:")
    question = unlabelled(head)
    query = tail.strip().split("\n\n")[0].strip().rstrip(";").strip()
    if not marker or not question.endswith(("?", ".")) or len(question) < 12 or not query.upper().startswith(
            ("SELECT", "WITH")):
        return None
    return question, " ".join(query.split())


def parse_reworded(text: str) -> str | None:
    """The rewording: its first line that is not a preamble ("Sure! Here's how an engineer might type it:"),
    without a label or quotes."""
    lines = [line for line in text.splitlines() if line.strip() and not line.strip().endswith(":")]
    line = unlabelled(lines[0] if lines else "").strip('"\'')
    return line if len(line) >= 12 else None


def unlabelled(text: str) -> str:
    """The question itself: what follows the last "Question:" label when there is one (a 1.5B teacher opens with
    "Sure, here is a new question: ... Question: ..."), on one line."""
    _, label, after = text.rpartition("Question:")
    return " ".join((after if label else text).split()).strip()


def rows_of(tool: TableTool, table: str, rng: random.Random) -> str:
    done = call(tool, f"SELECT * FROM {table} LIMIT 50")
    if done.error or not done.cells:
        return ""
    chosen = rng.sample(done.cells, min(EXAMPLE_ROWS, len(done.cells)))
    return "\n".join(", ".join(f"{c}={v}" for c, v in zip(done.result.columns, row)) for row in chosen)


def plan(tool: TableTool, rule: list[Question], cfg, seed: int) -> list[dict]:
    """Every proposal to write: (id, kind, prompt, and for a rewording its seed), in a fixed order."""
    rng = random.Random(seed)
    proposals = []
    for table in tool.tables:
        examples = [q for q in rule if q.query and f"FROM {table.name}" in q.query][:8]
        for j in range(math.ceil(cfg.written)):
            shown = rng.sample(examples, min(2, len(examples)))
            text = "\n".join(f"Question: {q.question}\nSQL: {q.query}" for q in shown)
            prompt = WRITE_PROMPT.format(schema=schema_text([table]), rows=rows_of(tool, table.name, rng),
                                         examples=text)
            proposals.append({"id": f"tw-{table.name}-{j}", "kind": "written", "table": table.name, "prompt": prompt})
    for index, q in enumerate(rule):
        count = math.floor((index + 1) * cfg.rewordings + 1e-9) - math.floor(index * cfg.rewordings + 1e-9)
        proposals += [{"id": f"{q.id}~r{j}", "kind": "reworded", "seed": q.id,
                       "prompt": REWORD_PROMPT.format(question=q.question)} for j in range(count)]
    return proposals


def checked(proposal: dict, text: str, tool: TableTool, seeds: dict[str, Question]) -> dict:
    """The proposal with what the teacher wrote and, before any solve, whether it passes (`fault` None)."""
    row = {**proposal, "text": text, "fault": None}
    if proposal["kind"] == "written":
        parsed = parse_written(text)
        if parsed is None:
            return {**row, "fault": "not a question and its SQL"}
        row["question"], row["query"] = parsed
        done = call(tool, row["query"])
        if done.error or not done.cells or len(done.cells) > MAX_SHOWN_ROWS:
            return {**row, "fault": done.error or ("no rows" if not done.cells else "too many rows")}
        if all(cell == "null" for cells in done.cells for cell in cells):
            return {**row, "fault": "its rows are empty values (null)"}
        row["answer"] = result_text(done)
    else:
        seed = seeds[proposal["seed"]]
        row["question"] = parse_reworded(text)
        if row["question"] is None:
            return {**row, "fault": "no question"}
        if similar(row["question"], seed.question) >= NEAR_COPY:
            return {**row, "fault": "copies its seed"}
        row["query"], row["answer"] = seed.query, seed.answer
    return row


def majority_rows(answers: list[str | None], reference: Question) -> tuple[str | None, float]:
    votes = Counter(c for c in (canonical(a, reference) for a in answers) if c is not None)
    if not votes:
        return None, 0.0
    best, count = votes.most_common(1)[0]
    return best, count / len(answers)


def run_table_teacher(cfg, tool: TableTool, rule: list[Question], files, teacher, model: str, seed: int = 0,
                      progress=None) -> list[Question]:
    """The kept written and reworded questions (with provenance); both logs appended chunk by chunk."""
    seeds = {q.id: q for q in rule}
    proposals_log, solves_log = AppendLog(files.proposals, key="id"), AppendLog(files.solves, key="id")
    done = proposals_log.done()
    todo = [p for p in plan(tool, rule, cfg, seed) if p["id"] not in done]
    writing = Sampling(max_new_tokens=WRITE_TOKENS, temperature=cfg.temperature, stop_after_answer=False,
                       calculator=False, seed=seed)
    bar = progress_bar(len(todo), progress and f"{progress} write")
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start:start + cfg.batch_size]
        texts = teacher.generate([[{"role": "user", "content": p["prompt"]}] for p in chunk], writing,
                                 batch_size=len(chunk))
        proposals_log.append(checked(p, t, tool, seeds) for p, t in zip(chunk, texts))
        bar.update(len(chunk))
    bar.close()
    passed = [p for p in proposals_log.rows() if p.get("fault") is None]
    shots = [(q, answer_first_target(q)) for q in rule[:2]]
    solved = solves_log.done()
    waiting = [p for p in passed if f"{p['id']}#0" not in solved]
    solving = Sampling(max_new_tokens=SOLVE_TOKENS, temperature=cfg.solve_temperature, tables=tool, seed=seed)
    bar = progress_bar(len(waiting), progress and f"{progress} solve")
    for start in range(0, len(waiting), cfg.batch_size):
        chunk = waiting[start:start + cfg.batch_size]
        asked = with_context([as_question(p) for p in chunk], tool)
        conversations = [chat(q, shots) for q in asked for _ in range(cfg.solves)]
        texts = teacher.generate(conversations, solving, batch_size=len(conversations))
        solves_log.append({"id": f"{p['id']}#{k}", "proposal": p["id"], "text": texts[i * cfg.solves + k]}
                          for i, p in enumerate(chunk) for k in range(cfg.solves))
        bar.update(len(chunk))
    bar.close()
    return kept(passed, solves_log.rows(), rule, model)


def progress_bar(total: int, label: str | None):
    """One bar over a whole pass, with its ETA (the chunks' own bars would restart at every chunk)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="q", disable=label is None or not total)


def as_question(row: dict) -> Question:
    return Question(id=row["id"], question=row["question"], answer=row["answer"], answer_type="rows",
                    query=row["query"])


def kept(passed: list[dict], solves: list[dict], rule: list[Question], model: str) -> list[Question]:
    """Proposals whose solves' majority returns their rows, near-duplicates of earlier ones left out."""
    by_proposal: dict[str, list[str]] = {}
    for s in solves:
        by_proposal.setdefault(s["proposal"], []).append(s["text"])
    out, seen = [], [q.question for q in rule]
    for row in passed:
        q = as_question(row)
        texts = by_proposal.get(row["id"], [])
        winner, share = majority_rows([extract_answer(t, "rows") for t in texts], q)
        if not texts or winner != canonical(q.answer, q) or share <= 0.5:
            continue
        if any(similar(q.question, other) >= NEAR_COPY for other in seen):
            continue
        seen.append(q.question)
        q.source = f"teacher.tables: {row['kind']} by {model}"
        q.topic = f"{row['kind']}/{row.get('table') or row.get('seed')}"
        out.append(q)
    return out
