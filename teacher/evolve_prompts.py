"""The prompts of the self-generation round: rewordings, variations, compositions, and the reasoning-first solve.

The rewording styles were written from the train split's own wordings only (what a plant says that the train
questions do not): never from the dev or held-out questions. The worked examples are train seeds too.
"""
from __future__ import annotations

import hashlib
import json
import re

from edgedistill.calculator import ANNOTATION
from edgedistill.records import Question

# Other voices and formats a plant uses, other ways of writing numbers and units; the unit asked for never changes.
STYLES = (
    "a short chat message an operator types to a colleague, casual, in the first person",
    "a terse line in the shift log written by the supervisor, with the question at the end",
    "a question from a maintenance planner that gives the numbers in a different order",
    "a line from a production report followed by a question, using abbreviations such as hrs, pcs, min, qty",
    "a polite email to the plant manager, two or three sentences",
    "a question a new starter asks out loud on the shop floor, in simple words",
    "a ticket in the maintenance system: a short title, a colon, the details, then the question",
    "a question that writes the units differently (h for hours, min for minutes, pcs for pieces, kg, m)",
)

REWORD_SYSTEM = ("You rewrite questions asked on a factory floor. Keep every number exactly as it is and keep what "
                 "the question asks for, in the same unit. Reply with the rewritten question only.")
REWORD_EXAMPLE = (
    "The milling centre makes 90 flanges per hour. How many flanges does it make in 7 hours?",
    "a short chat message an operator types to a colleague, casual, in the first person",
    "hey, my mill's doing 90 flanges an hour - how many will I have after 7 hours?")

VARY_SYSTEM = "You write new practice questions for a factory floor, each with the expression that answers it."
VARY_USER = ("Question: {question}\nExpression: {expression}\n\nWrite a new question of the same kind with "
             "different numbers, and another machine, part or line. Reply in two lines:\nQuestion: ...\n"
             "Expression: ... (one arithmetic expression over the new question's numbers that computes its answer)")

COMPOSE_SYSTEM = VARY_SYSTEM
COMPOSE_USER = ("Question 1: {first}\nQuestion 2: {second}\n\nWrite one new two-step question about one plant: its "
                "first step is like question 1, and that step's result is a number the second step, like question "
                "2, needs. Give only the starting numbers, not the first step's result. Reply in two lines:\n"
                "Question: ...\nExpression: ... (one arithmetic expression computing the final answer)")
COMPOSE_EXAMPLE = (
    "The milling centre makes 90 flanges per hour. How many flanges does it make in 7 hours?",
    "A crate holds 45 flanges. How many crates are needed for 630 flanges?",
    "Question: The milling centre makes 90 flanges an hour and runs for 7 hours; the flanges are packed 45 to a "
    "crate. How many crates does the run fill?\nExpression: 90*7/45")

SOLVE_SYSTEM = ("Solve the question. Reason in short steps and write every calculation as <<expression=>> (a "
                "calculator fills in the value). Finish with a last line 'Answer: <number>'.")

_FIELD = re.compile(r"^\s*(question|expression)\s*:\s*(.+?)\s*$", re.I | re.M)


REWORD_USER = "Rewrite this question as {style}. It must still give {numbers} and ask the same thing.\n\nQuestion: {q}"


def reword(seed: Question, style: str, numbers: list[str]) -> list[dict]:
    """`numbers`: the seed's numbers its answer needs, named in the prompt (a small teacher drops them otherwise)."""
    example_question, example_style, example_answer = REWORD_EXAMPLE
    return [{"role": "system", "content": REWORD_SYSTEM},
            {"role": "user", "content": REWORD_USER.format(style=example_style, numbers="90 and 7",
                                                           q=example_question)},
            {"role": "assistant", "content": example_answer},
            {"role": "user", "content": REWORD_USER.format(style=style, numbers=said(numbers), q=seed.question)}]


def said(numbers: list[str]) -> str:
    return "the number " + numbers[0] if len(numbers) == 1 else ", ".join(numbers[:-1]) + " and " + numbers[-1] \
        if numbers else "every number"


def vary(seed: Question, example: tuple[Question, Question]) -> list[dict]:
    shown, written = example
    return [{"role": "system", "content": VARY_SYSTEM},
            {"role": "user", "content": VARY_USER.format(question=shown.question, expression=shown.answer_expr)},
            {"role": "assistant", "content": f"Question: {written.question}\nExpression: {written.answer_expr}"},
            {"role": "user", "content": VARY_USER.format(question=seed.question, expression=seed.answer_expr)}]


def compose(first: Question, second: Question) -> list[dict]:
    one, two, answer = COMPOSE_EXAMPLE
    return [{"role": "system", "content": COMPOSE_SYSTEM},
            {"role": "user", "content": COMPOSE_USER.format(first=one, second=two)},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": COMPOSE_USER.format(first=first.question, second=second.question)}]


def solve(question: str, shots: list[Question]) -> list[dict]:
    """Reasoning first, then the answer: a strong teacher thinks before it commits (the stage rewrites a verified
    solve answer-first for the student)."""
    messages = [{"role": "system", "content": SOLVE_SYSTEM}]
    for shot in shots:
        messages += [{"role": "user", "content": shot.question},
                     {"role": "assistant", "content": f"{shot.rationale}\nAnswer: {shot.answer}"}]
    return messages + [{"role": "user", "content": question}]


def parse_question(text: str) -> str | None:
    """A rewording: the first paragraph, without a "Question:" label or quotes; None if empty or rambling."""
    body = text.strip().split("\n\n")[0].strip()
    body = re.sub(r"^\s*(rewritten question|question)\s*:\s*", "", body, flags=re.I).strip().strip('"').strip()
    body = " ".join(body.split())
    return body if 12 <= len(body) <= 400 and not ANNOTATION.search(body) else None


def parse_question_expression(text: str) -> tuple[str | None, str | None]:
    fields = {name.lower(): value for name, value in _FIELD.findall(text)}
    question = fields.get("question")
    question = " ".join(question.split()) if question and 12 <= len(question) <= 500 else None
    expression = re.sub(r"\s*\((?:[a-z][^()]*)\)\s*$", "", fields.get("expression") or "", flags=re.I)  # "(one ...)"
    expression = expression.strip().rstrip(".").strip().strip("`").strip() or None
    return question, expression


# Work-order lines (answer type label): how technicians write them, from the train lines' own habits (dropped
# letters, abbreviations, terse fragments); never from the dev lines.
WORK_ORDER_STYLES = (
    "terse shorthand typed on a tablet: abbreviations such as u/s, repl, brg, hyd, elec, pmp, no full sentence",
    "with the typos and dropped letters of a fast typist",
    "the same fault on another asset of the same kind (another pump, conveyor, motor, valve or hose)",
    "a slightly longer note of what was found and where, in plain words, at most 12 words",
)
WORK_ORDER_SYSTEM = ("You rewrite maintenance work-order lines the way technicians type them. Keep the same fault, "
                     "so the failure mode stays the same. Reply with the new line only.")
WORK_ORDER_USER = "Rewrite this work-order line as {style}.\n\nLine: {line}"
WORK_ORDER_EXAMPLE = ("hydraulic hose leaking at boom", "terse shorthand typed on a tablet: abbreviations such as "
                      "u/s, repl, brg, hyd, elec, pmp, no full sentence", "hyd hose lkg @ boom")
LABEL_SOLVE_SYSTEM = ("Decide the failure mode of the maintenance work order. Reason in one or two short sentences, "
                      "then finish with a last line 'Answer: <failure mode>', using one of these failure modes: "
                      "{labels}.")


def reword_line(line: str, style: str) -> list[dict]:
    example_line, example_style, example_answer = WORK_ORDER_EXAMPLE
    return [{"role": "system", "content": WORK_ORDER_SYSTEM},
            {"role": "user", "content": WORK_ORDER_USER.format(style=example_style, line=example_line)},
            {"role": "assistant", "content": example_answer},
            {"role": "user", "content": WORK_ORDER_USER.format(style=style, line=line)}]


def solve_label(line: str, labels: list[str], examples: list[tuple[str, str]] = ()) -> list[dict]:
    """The label set in the system turn (the same for every line, so a batch prefills it once), then labelled train
    lines like this one as worked turns (a plant's label conventions are its own: "fell of" is a minor in-service
    problem there), then the line."""
    messages = [{"role": "system", "content": LABEL_SOLVE_SYSTEM.format(labels="; ".join(labels))}]
    for example, label in examples:
        messages += [{"role": "user", "content": f"Work order: {example}"},
                     {"role": "assistant", "content": f"Answer: {label}"}]
    return messages + [{"role": "user", "content": f"Work order: {line}"}]


def trigrams(text: str) -> set[str]:
    padded = f"  {text.lower()} "
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def neighbours(line: str, pool: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The k (line, label) of `pool` closest to `line` by character-trigram overlap (Jaccard), closest last (nearest
    the question in the prompt); ties in pool order."""
    mine = trigrams(line)
    scored = sorted(pool, key=lambda item: -len(mine & trigrams(item[0])) / max(1, len(mine | trigrams(item[0]))))
    return scored[:k][::-1]


def parse_line(text: str) -> str | None:
    """A rewritten work-order line: the first line, without a label or quotes; None if empty or too long."""
    body = (text.strip().splitlines() or [""])[0]
    body = re.sub(r"^\s*(new line|line|rewritten line|work order)\s*:\s*", "", body, flags=re.I).strip().strip('"')
    body = " ".join(body.split())
    return body if 2 <= len(body) <= 120 else None


def prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
