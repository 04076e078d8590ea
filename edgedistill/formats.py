"""Prompts, answer-first targets and the answer checker: the text formats every stage agrees on.

An answer-first target puts the answer on the first line, the reasoning after it:

    Answer: <<60*7.5=450>>
    Reason: The line makes 60 parts an hour for 7.5 hours: <<60*7.5=450>> parts.

The value after `=` is written by the calculator, not the model, and is not repeated after `>>`. Where no
arithmetic is involved the line is `Answer: B` or `Answer: Leaking`. Inference can stop at the end of the
Answer line (post-thinking, arXiv 2404.09170): the answer does not depend on the rationale after it.
"""
from __future__ import annotations

import re

from edgedistill import table_queries
from edgedistill.calculator import ANNOTATION, CalculatorError, evaluate, format_number
from edgedistill.expressions import inline_annotations
from edgedistill.records import Question

# Short on purpose: every training example and every prompt carries it (a CPU pays per token).
INSTRUCTION = "Write 'Answer:' first, arithmetic as <<expression=>>, then 'Reason:'."
# With the plant's tables in the prompt (their schema follows it): the model decides whether a question needs them.
INSTRUCTION_TABLES = ("Write 'Answer:' first, arithmetic as <<expression=>>, a lookup in the tables below as "
                      "[[SELECT ... =>]], then 'Reason:'.\nTables:\n")
# The same content reasoning first (pre-thinking, the baseline answer-first is compared against).
INSTRUCTION_RATIONALE_FIRST = "Write 'Reason:' first, arithmetic as <<expression=>>, then 'Answer:'."

_GSM8K_REPEAT = re.compile(r"(<<[^<>=]*=([^<>]*)>>)\s*\2(?![\d.])")   # `<<2*3=6>>6` -> `<<2*3=6>>`


def user_message(question: Question | str) -> str:
    """The question as the model reads it: its options one a line, and the names it uses that the tables hold."""
    q = question if isinstance(question, str) else question.question
    if not isinstance(question, str) and question.options:
        q += "\n" + "\n".join(question.options)
    if not isinstance(question, str) and question.hints:
        q += "\n" + question.hints
    return q


def chat(question: Question | str, shots: list[tuple[Question, str]] = (), instruction: str = INSTRUCTION
         ) -> list[dict]:
    """The chat messages for a question: the instruction as the system turn (it replaces a template's default
    system prompt, so the prompt stays short), then worked examples (question, target) as earlier turns. A question
    with tables in its context gets the tables' instruction and their schema instead."""
    if not isinstance(question, str) and question.context:
        instruction = INSTRUCTION_TABLES + question.context
    messages = [{"role": "system", "content": instruction}]
    for shot_question, target in shots:
        messages += [{"role": "user", "content": user_message(shot_question)},
                     {"role": "assistant", "content": target}]
    return messages + [{"role": "user", "content": user_message(question)}]


def clean_rationale(rationale: str) -> str:
    """A reference rationale in our convention: GSM8K's repeated value after `>>` removed, one paragraph."""
    text = _GSM8K_REPEAT.sub(r"\1", rationale.strip())
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def answer_first_target(question: Question, rationale: str | None = None) -> str:
    """`Answer: <<expr=value>>` (or `Answer: value`; a choice's letter with its option, `Answer: D. current`),
    newline, `Reason: ...`."""
    if question.answer_expr:
        answer = f"<<{question.answer_expr}={format_number(evaluate(question.answer_expr))}>>"
    elif question.query:
        answer = f"[[{question.query} => {question.answer}]]"
    else:
        answer = chosen_option(question) or question.answer
    reason = clean_rationale(rationale if rationale is not None else (question.rationale or ""))
    return f"Answer: {answer}\nReason: {reason}" if reason else f"Answer: {answer}"


def chosen_option(question: Question) -> str | None:
    """A choice answered by its letter, as its option reads ("D. current"), or None. Trained on letters alone, a
    135M student learnt which letter is common (it answered "A" to 82% of new FailureSensorIQ questions); with the
    option's words on the answer line it must tie the answer to what the option says."""
    letter, options = (question.answer or "").strip().upper(), question.options or []
    if question.answer_type != "choice" or len(letter) != 1 or not "A" <= letter < chr(ord("A") + len(options)):
        return None
    option = options[ord(letter) - ord("A")].strip()
    return option if re.match(rf"\(?{letter}[).:]", option) else f"{letter}. {option}"


def reasoning_of(text: str) -> str:
    """The reasoning of a reasoning-first completion as one paragraph: without its `Reason:` label and without
    its Answer line (and whatever follows it)."""
    answer_at, reason_at = text.find("Answer:"), text.find("Reason:")
    if 0 <= answer_at < reason_at:     # written answer-first after all: the reasoning is what follows Reason:
        body = split_answer_reason(text)[1]
    else:
        cut = text.rfind("Answer:")
        body = re.sub(r"^\s*Reason:\s*", "", (text[:cut] if cut >= 0 else text).strip())
    return " ".join(line.strip() for line in body.splitlines() if line.strip())


def answer_first_from_reasoning(text: str, question: Question, reference: str) -> str | None:
    """A verified reasoning-first completion rewritten answer-first for the student. For a number, the Answer line
    is one expression over the question's numbers, made by inlining the reasoning's annotations
    (expressions.inline_annotations); None when that fails (the sample is dropped and counted)."""
    reason = reasoning_of(text)
    if question.answer_type != "number":
        return f"Answer: {reference}\nReason: {reason}" if reason else f"Answer: {reference}"
    expression = inline_annotations(reason, reference, user_message(question))
    if expression is None:
        return None
    answer = f"<<{expression}={format_number(evaluate(expression))}>>"
    return f"Answer: {answer}\nReason: {reason}" if reason else f"Answer: {answer}"


def rationale_first(answer_first: str) -> str:
    """The same answer and rationale with the rationale first: `Reason: ...` then `Answer: ...` on the last line."""
    answer, reason = split_answer_reason(answer_first)
    return f"Reason: {reason}\nAnswer: {answer}" if reason else f"Answer: {answer}"


def answer_line(text: str) -> str | None:
    """The text after 'Answer:' up to the end of its line, or None when the model wrote no Answer line."""
    match = re.search(r"Answer:\s*(.*)", text)
    return match.group(1).strip() if match else None


def split_answer_reason(text: str) -> tuple[str | None, str]:
    """(answer line, rationale) of an answer-first completion."""
    answer = answer_line(text)
    match = re.search(r"Reason:\s*(.*)", text, re.S)
    return answer, (match.group(1).strip() if match else "")


# What a person reads of a completion, as it streams: the page and the API show the same.
OPEN_ANNOTATION = "<<"


def readable(text: str) -> str:
    """Model text as a person reads it: each `<<expr=value>>` becomes its value, each `[[query => rows]]` its rows;
    a half-written one is hidden."""
    text = table_queries.readable(ANNOTATION.sub(lambda m: m.group(2).strip(), text))
    return text[:text.rindex(OPEN_ANNOTATION)] if OPEN_ANNOTATION in text else text


def split_stream(text: str) -> tuple[str, str, bool]:
    """(answer line, reasoning, answer line finished?) of a completion so far, labels stripped."""
    head, newline, rest = text.lstrip().partition("\n")
    answer = head.split("Answer:", 1)[-1].strip()
    reasoning = rest.strip()
    if reasoning.startswith("Reason:"):
        reasoning = reasoning[len("Reason:"):].strip()
    return answer, reasoning, bool(newline)


def computations(text: str) -> str:
    """The calculator's work the answer rests on: the Answer line's computations, else the reasoning's."""
    head, _, rest = text.partition("\n")
    shown = calculated(head) or calculated(rest)
    return "Computation: " + (", ".join(dict.fromkeys(shown)) or "none")


def calculated(text: str) -> list[str]:
    """`expr = value` for each annotation whose value is the one the calculator writes for its expression. A value
    the model wrote itself (the calculator refused the expression, or the model closed it with its own number) is
    no computation, and the stream does not say who wrote which token on every backend, so each is re-evaluated."""
    shown = []
    for expr, value in ANNOTATION.findall(text):
        try:
            if format_number(evaluate(expr)) == value.strip():
                shown.append(f"`{expr.strip()} = {value.strip()}`")
        except CalculatorError:
            continue
    return shown
