"""Answer checkers: what counts as the same answer, by the question's answer type, and the majority of k answers.

    number  the value after the calculator filled the Answer line; equal to the reference's decimals or within
            a relative 1e-4 ("1,200", "$1200.00" and "1200 parts" all read as 1200)
    choice  one option letter: "B", "(B)", "B) current" and "b." read as B; the option's text alone counts too
    label   one label of a closed set (the question's `options`): case, punctuation and spacing ignored; a line
            that names exactly one label reads as that label
    text    free text: a judge model decides when one is given (`Judge`), else equality after normalising
    rows    a table query's result: the rows the student's query returned (the last `[[query => rows]]` on the
            Answer line) equal to the reference query's as sets of rows (order, case and punctuation ignored)

`canonical(answer, question)` maps an answer to the form two answers are compared in, so the same function serves
grading against a reference and voting among samples when there is no reference (`majority`).
"""
from __future__ import annotations

import re
import string
from collections import Counter

from edgedistill.answer_rules import choice_letter, label_of, said
from edgedistill.calculator import ANNOTATION, CalculatorError, evaluate, format_number, numbers_match
from edgedistill.formats import answer_line
from edgedistill.table_queries import QUERY_ANNOTATION, result_rows
from edgedistill.records import Question

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str, answer_type: str = "number") -> str | None:
    """The model's answer: read from the Answer line (after the calculator filled it in).

    For numbers: the value of the last annotation on that line, else its first number; for models that ignore
    the format, the last number anywhere in the text. For choice, label and text answers: the line's text (when
    there is no Answer line: for a choice the first line, a letter there is still a letter; for a label the last
    line, which the checker reads as a label when it names exactly one).
    """
    line = answer_line(text)
    if answer_type == "rows" and line is not None:
        results = QUERY_ANNOTATION.findall(line)
        return results[-1][1].strip() if results else line.strip().rstrip(".")
    if answer_type != "number":
        if line is None and answer_type == "choice":   # a model ignoring the format: "E. voltage" is still E
            line = next((part for part in text.splitlines() if part.strip()), None)
        if line is None and answer_type == "label":    # "Failure mode: Leaking": canonical() finds the one label named
            line = next((part for part in reversed(text.splitlines()) if part.strip()), None)
        return line.strip().rstrip(".") if line else None
    if line is not None:
        annotations = ANNOTATION.findall(line)
        if annotations:
            expr, value = annotations[-1]
            if value.strip():
                return value.strip()
            try:
                return format_number(evaluate(expr))
            except CalculatorError:
                return None
        numbers = _NUMBER.findall(line)
        if numbers:
            return numbers[0].replace(",", "")
    numbers = _NUMBER.findall(ANNOTATION.sub(lambda m: f" {m.group(2)} ", text))
    return numbers[-1].replace(",", "") if numbers else None


def run_tokens(text: str) -> list[str]:
    """Lower-cased whitespace tokens with punctuation stripped from their edges (empty ones dropped): the seed
    generator's tokens for its shared-word-run check, which new questions must pass too."""
    return [t for t in (w.strip(string.punctuation) for w in text.lower().split()) if t]


def word_runs(text: str, n: int) -> set[tuple[str, ...]]:
    """Every run of n consecutive tokens (run_tokens) of a text."""
    toks = run_tokens(text)
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}




def _number(answer: str) -> float | None:
    numbers = _NUMBER.findall(str(answer).replace("$", ""))
    try:
        return float(numbers[0].replace(",", "")) if numbers else None
    except ValueError:
        return None


def option_letters(question: Question) -> list[str]:
    return [chr(ord("A") + i) for i in range(len(question.options or []))]


def canonical(answer: str | None, question: Question) -> str | None:
    """The comparable form of an answer, or None when it is not a valid answer of the question's type."""
    if answer is None or not str(answer).strip():
        return None
    answer = str(answer).strip()
    kind = question.answer_type
    if kind == "number":
        value = _number(answer)
        return None if value is None else format_number(value)
    if kind == "choice":
        return choice_letter(answer, question.options or [])
    if kind == "label":
        return label_of(answer, question.options or [])
    if kind == "rows":
        return " ; ".join(result_rows(answer)) or None
    return said(answer) or None


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def f1_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation (Rajpurkar et al. 2016): lower case, punctuation deleted (so "seal-kit" is one
    token, "sealkit"), the articles a/an/the dropped, then whitespace tokens."""
    text = "".join(ch for ch in str(text).lower() if ch not in string.punctuation)
    return _ARTICLES.sub(" ", text).split()


def token_f1(predicted: str | None, reference: str | None) -> float:
    """Token F1 of a free-text answer against the reference, SQuAD-style: partial credit where exact match gives
    none ("replace the pump seal" vs "replace seal": precision 2/3, recall 1, F1 0.8). Tokens count with their
    multiplicity; when either side has no tokens, 1.0 if both have none, else 0.0 (and 0.0 for a missing answer,
    as is_correct says False)."""
    if predicted is None or reference is None:
        return 0.0
    mine, theirs = f1_tokens(predicted), f1_tokens(reference)
    if not mine or not theirs:
        return float(mine == theirs)
    common = sum((Counter(mine) & Counter(theirs)).values())
    if not common:
        return 0.0
    precision, recall = common / len(mine), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def is_correct(predicted: str | None, question: Question, judge: "Judge | None" = None) -> bool:
    """Does `predicted` match the question's reference answer? (False when either is missing.)"""
    if predicted is None or question.answer is None:
        return False
    if question.answer_type == "number":
        value = _number(predicted)
        return value is not None and numbers_match(question.answer, value)
    if question.answer_type == "text" and judge is not None:
        return judge.same(question, question.answer, predicted)
    mine, reference = canonical(predicted, question), canonical(question.answer, question)
    return mine is not None and mine == reference


def majority(predictions: list[str | None], question: Question) -> tuple[str | None, float]:
    """The most common valid answer among k samples and its agreement (its votes / k); (None, 0.0) without one.

    Stands in for the reference when a question comes without one (self-consistency, Wang et al. 2022): invalid
    answers count in k but vote for nothing, so four samples with one number and three blanks agree at 25%. Ties go
    to the answer seen first, so the result is a function of the samples' order (the seed).
    """
    votes = Counter(c for c in (canonical(p, question) for p in predictions) if c is not None)
    if not votes:
        return None, 0.0
    best = max(votes.values())
    winner = next(c for c in (canonical(p, question) for p in predictions) if c is not None and votes[c] == best)
    return winner, round(best / len(predictions), 4)


JUDGE_PROMPT = ("Question: {question}\nReference answer: {reference}\nStudent answer: {predicted}\n"
                "Does the student answer mean the same as the reference answer? Reply with Yes or No only.")


class Judge:
    """Free-text answers judged by a model: `same()` asks it whether two answers mean the same (greedy, Yes/No).

    Any generator the kernel makes will do (a local GGUF, a server's URL). Equal answers after normalising skip
    the model; its verdicts are kept per (question, answer) so k identical samples cost one call.
    """

    def __init__(self, generator):
        self.generator = generator
        self._seen: dict[tuple, bool] = {}

    def same(self, question: Question, reference: str, predicted: str) -> bool:
        if said(reference) == said(predicted):
            return True
        key = (question.question, reference, predicted)
        if key not in self._seen:
            from edgedistill.generation import Sampling
            prompt = JUDGE_PROMPT.format(question=question.question, reference=reference, predicted=predicted)
            reply = self.generator.generate([[{"role": "user", "content": prompt}]],
                                            Sampling(max_new_tokens=4, stop_after_answer=False))[0]
            self._seen[key] = reply.strip().lower().startswith("yes")
        return self._seen[key]
