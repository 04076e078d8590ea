"""Self-generation round (`teacher.evolve`): the teacher writes the new questions the student needs.

SPHERE's first step (arXiv 2503.04813) and InfiAlign's data synthesis (arXiv 2508.05496), for any seed set with
answers and any model teacher backend. Per chunk of seeds, two passes, each appended to its own log:

    1. write   proposals.jsonl  per seed, `rewordings` other voices and formats (same numbers, same unit asked),
                                `variations` (same structure, new numbers or objects, with the expression that
                                answers them) and `compositions` (this seed and a seed of another topic joined
                                into a two-step question). Checks that need no solve run here, so a near-copy or a
                                rewording that lost a number costs no solves.
    2. solve   solves.jsonl     each proposal that passed is solved `solves` times, reasoning first, calculator on.

Then evolve_views.py decides what is kept (majority, agreement, the seed's answer for a rewording, the
expression's value for a variation or composition), rewrites a verified solve answer-first, drops contaminated
and near-duplicate questions, and fills kept templates with new numbers.

Resume: ids are `<seed>~<kind><j>` (proposals) and `<proposal>#<k>` (solves); chunks are cut from the whole seed
list and seeded by their index, so after kill -9 a rerun writes only what is missing, and the same records an
uninterrupted run would have.
"""
from __future__ import annotations

import difflib
import math
import re
from edgedistill.calculator import CalculatorError, evaluate, format_number
from edgedistill.answer_rules import words
from edgedistill.checkers import extract_answer
from edgedistill.config import Config
from edgedistill.datasets import work_order_question, work_order_text
from edgedistill.expressions import UNIT_FACTORS, key, literals, question_numbers, shown_numbers
from edgedistill.generation import Sampling
from edgedistill.records import AppendLog, Question
from edgedistill.rundir import EvolveFiles
from edgedistill.teacher import evolve_prompts as prompts
from edgedistill.teacher.clock import RoundClock, chunk_seed, unfinished_chunks

KINDS = ("reword", "vary", "compose")
SOLVE_SHOTS = 2


def planned(seeds: list[Question], config) -> list[tuple[str, Question, str]]:
    """(proposal id, seed, kind) for every proposal the config asks for, in order; a fractional count per seed
    gives the seeds in between one each (0.5: every other seed)."""
    rates = {"reword": config.rewordings, "vary": config.variations, "compose": config.compositions}
    plan = []
    for index, seed in enumerate(seeds):
        for kind in KINDS:
            if kind != "reword" and not seed.answer_expr:   # a variation's example shows the seed's expression
                continue
            count = math.floor((index + 1) * rates[kind] + 1e-9) - math.floor(index * rates[kind] + 1e-9)
            plan += [(f"{seed.id}~{kind[0]}{j}", seed, kind) for j in range(count)]
    return plan


def conversation_for(proposal_id: str, seed: Question, kind: str, seeds: list[Question]) -> tuple[list[dict], dict]:
    """The prompt of one proposal and what it records about itself (style, partner seed)."""
    index = seeds.index(seed)
    j = int(proposal_id.rsplit("~", 1)[1][1:])
    if kind == "reword" and seed.answer_type == "label":   # a work-order line, rewritten as technicians type
        style = prompts.WORK_ORDER_STYLES[(index + j) % len(prompts.WORK_ORDER_STYLES)]
        return prompts.reword_line(work_order_text(seed.question) or seed.question, style), {"style": style}
    if kind == "reword":
        style = prompts.STYLES[(index * 3 + j) % len(prompts.STYLES)]
        return prompts.reword(seed, style, needed_numbers(seed)), {"style": style}
    if kind == "vary":
        same_topic = [s for s in seeds if s.topic == seed.topic and s.id != seed.id and s.answer_expr]
        pair = same_topic[(index + j) % len(same_topic)] if len(same_topic) >= 2 else seed
        partner = same_topic[(index + j + 1) % len(same_topic)] if len(same_topic) >= 2 else seed
        return prompts.vary(seed, (pair, partner)), {"example": [pair.id, partner.id]}
    others = [s for s in seeds if s.topic != seed.topic] or [s for s in seeds if s.id != seed.id] or [seed]
    partner = others[(index * 7 + j) % len(others)]
    return prompts.compose(seed, partner), {"partner": partner.id}


def needed_numbers(seed: Question) -> list[str]:
    """The numbers of the seed's question that its answer's expression uses, in the order the question gives them
    (unit factors such as 100 and 60 aside: a rewording may say "6%" for "6 in 100", "an hour" for "60 minutes")."""
    used = set(literals(seed.answer_expr)) - UNIT_FACTORS if seed.answer_expr else set()   # "6 in 100" may be "6%"
    return [n for n in dict.fromkeys(shown_numbers(seed.question)) if n in used]


def gives_away(question: str, answer: str | None, seed_question: str) -> bool:
    """Does a new question show its own answer (`= 140 seconds`, `29 out of 500, 5.8%`) when the seed did not?"""
    if answer is None:
        return False
    value = key(float(answer))
    return value in question_numbers(question) and value not in question_numbers(seed_question)


ASKING = re.compile(r"\?|\b(how|what|which|when|calculate|find|work out|give|tell|estimate|determine|compute|convert|express)\b",
                    re.I)


def added_numbers(question: str, seed_question: str) -> set[str]:
    """Numbers a rewording shows that its seed did not: a small count (a line number, "2 shifts") or a unit factor
    may be new; any other new number is one the teacher made up ("... is 367 degrees")."""
    new = question_numbers(question) - question_numbers(seed_question) - UNIT_FACTORS
    return {n for n in new if not (float(n).is_integer() and float(n) <= 12)}


def parse_proposal(kind: str, seed: Question, text: str, near_copy: float) -> dict:
    """What a proposal says: {question, expression, reference} or {rejected: reason}; the checks that need no
    solve. The views run it again on the stored text, so a check added later applies to the whole log."""
    if seed.answer_type == "label":
        return parse_work_order(seed, text, near_copy)
    if kind == "reword":
        question = prompts.parse_question(text)
        if question is None:
            return {"rejected": "unreadable (empty, too long or not one question)"}
        reason = rewording_fault(question, seed, near_copy)
        return {"question": question, **({"rejected": reason} if reason else {"reference": seed.answer})}
    question, expression = prompts.parse_question_expression(text)
    if question is None or expression is None:
        return {"question": question, "rejected": "no 'Question:' and 'Expression:' lines"}
    try:
        value = format_number(evaluate(expression))
    except CalculatorError as exc:
        return {"question": question, "expression": expression, "rejected": f"expression: {exc}"}
    reason = written_fault(question, expression, value, kind)
    return {"question": question, "expression": expression, **({"rejected": reason} if reason else {"reference": value})}


def parse_work_order(seed: Question, text: str, near_copy: float) -> dict:
    """A rewritten work-order line as a failure-code question with the seed's label set, or why it is refused: a
    near-copy of its seed's line (characters compared, since the lines are a few words long)."""
    line, seed_line = prompts.parse_line(text), work_order_text(seed.question) or seed.question
    if line is None:
        return {"rejected": "unreadable (empty or too long for a work-order line)"}
    question = work_order_question(line, seed.options or []).question
    if difflib.SequenceMatcher(None, seed_line.lower(), line.lower()).ratio() >= near_copy:
        return {"question": question, "line": line, "rejected": "near-copy of its seed"}
    return {"question": question, "line": line, "reference": seed.answer}


LABEL_EXAMPLES = 8   # labelled train lines shown with each work-order solve


def solve_conversation(row: dict, seed: Question, shots: list[Question], seeds: list[Question]) -> list[dict]:
    """A label question is solved against its label set with the train lines most like it as examples (never its own
    seed, whose label it must reach without being shown it); a number question reasoning first with the calculator."""
    if seed.answer_type == "label":
        pool = [(work_order_text(s.question) or s.question, s.answer) for s in seeds
                if s.answer_type == "label" and s.id != seed.id and s.options == seed.options]
        return prompts.solve_label(row["line"], seed.options or [],
                                   prompts.neighbours(row["line"], pool, LABEL_EXAMPLES))
    return prompts.solve(row["question"], shots)


def rewording_fault(question: str, seed: Question, near_copy: float) -> str | None:
    """Why a rewording is refused before any solve, or None."""
    if not ASKING.search(question):
        return "not a question (asks nothing)"
    if difflib.SequenceMatcher(None, words(seed.question), words(question)).ratio() >= near_copy:
        return "near-copy of its seed"
    missing = set(needed_numbers(seed)) - question_numbers(question)
    if missing:
        return f"lost the seed's number(s) {sorted(missing)}"
    if gives_away(question, seed.answer, seed.question):
        return "shows its own answer"
    made_up = added_numbers(question, seed.question)
    return f"adds numbers its seed does not have {sorted(made_up)}" if made_up else None


def written_fault(question: str, expression: str, value: str, kind: str) -> str | None:
    """Why a variation or composition (a question with the expression that answers it) is refused, or None."""
    if not ASKING.search(question):
        return "not a question (asks nothing)"
    unshown = {n for n in literals(expression) if n not in question_numbers(question)}
    if len(unshown) > 1 or not unshown <= UNIT_FACTORS | {"10"}:   # one unit factor may go unsaid (x60, /100)
        return f"expression uses numbers the question does not show: {sorted(unshown)}"
    if float(value) <= 0:
        return "the expression's value is not positive"
    if gives_away(question, value, ""):
        return "shows its own answer"
    if kind == "compose" and len(re.findall(r"[-+*/]", expression)) < 2:
        return "not two steps (one operation)"
    return None


def rechecked(row: dict, seed: Question, near_copy: float) -> dict:
    """A stored proposal with the verdict of today's pre-solve checks in place of the one it was written with."""
    kept = {k: v for k, v in row.items() if k not in ("rejected", "reference", "expression", "question", "line")}
    return kept | parse_proposal(row["kind"], seed, row["text"], near_copy)


def run_evolve(config: Config, seeds: list[Question], files: EvolveFiles, teacher, model: str) -> None:
    """Write and solve, chunk by chunk, appending to the two logs."""
    cfg = config.teacher.evolve
    proposals_log, solves_log = AppendLog(files.proposals, key="id"), AppendLog(files.solves, key="id")
    shots = [s for s in seeds if s.rationale and s.answer_type == "number"][:SOLVE_SHOTS]
    plan = planned(seeds[:cfg.seeds] if cfg.seeds else seeds, cfg)
    by_id = {seed.id: seed for seed in seeds}
    # a written proposal is judged by today's pre-solve checks (as the views judge it), not by those it was written
    # under: one that passes them now gets its solves, one that fails them gets none
    known = {row["id"]: rechecked(row, by_id[row["seed_id"]], cfg.near_copy)
             for row in proposals_log.rows() if row.get("seed_id") in by_id}
    written, solved = set(known), solves_log.done()
    unfinished = lambda pid: pid not in known or ("rejected" not in known[pid] and   # noqa: E731
                                                  any(f"{pid}#{k}" not in solved for k in range(cfg.solves)))
    todo = unfinished_chunks(plan, cfg.batch_size, lambda item: unfinished(item[0]))
    if written:
        print(f"evolve: resuming, {len(written)} proposals and {len(solved)} solves already written", flush=True)
    clock = RoundClock(files.progress, teacher, chunks=todo, desc="evolve", unit="proposal")
    for index, chunk in todo:
        seed_value = chunk_seed(config.seed, "evolve", index)
        rows = {pid: known[pid] for pid, _, _ in chunk if pid in known}
        fresh = [(pid, seed, kind) for pid, seed, kind in chunk if pid not in rows]
        if fresh:
            conversations = [conversation_for(pid, seed, kind, seeds) for pid, seed, kind in fresh]
            sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                stop_after_answer=False, calculator=False, seed=seed_value)
            texts = teacher.generate([c for c, _ in conversations], sampling, batch_size=len(fresh))
            new_rows = []
            for (pid, seed, kind), (conversation, extra), text in zip(fresh, conversations, texts):
                row = {"id": pid, "seed_id": seed.id, "kind": kind, "text": text, **extra,
                       **parse_proposal(kind, seed, text, cfg.near_copy),
                       "teacher": {"model": model, "backend": teacher.backend, "temperature": cfg.temperature,
                                   "seed": seed_value, "prompt_sha256": prompts.prompt_hash(conversation)}}
                new_rows.append(row)
                rows[pid] = row
            proposals_log.append(new_rows)
        to_solve = [(rows[pid], k) for pid, _, _ in chunk for k in range(cfg.solves)
                    if "rejected" not in rows[pid] and f"{pid}#{k}" not in solved]
        if to_solve:
            sampling = Sampling(max_new_tokens=cfg.solve_max_new_tokens, temperature=cfg.solve_temperature,
                                stop_after_answer=False, seed=seed_value + 500_000)
            conversations = [solve_conversation(row, by_id[row["seed_id"]], shots, seeds) for row, _ in to_solve]
            texts = teacher.generate(conversations, sampling, batch_size=len(conversations))
            solves_log.append({"id": f"{row['id']}#{k}", "proposal_id": row["id"], "text": text,
                               "predicted": extract_answer(text, by_id[row["seed_id"]].answer_type),
                               "prompt_sha256": prompts.prompt_hash(conversation),
                               "temperature": cfg.solve_temperature, "seed": seed_value + 500_000}
                              for (row, k), text, conversation in zip(to_solve, texts, conversations))
        clock.tick(len(chunk))   # the progress file sums every resume: the whole cost
    clock.close()
