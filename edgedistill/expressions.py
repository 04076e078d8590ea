"""The numbers of a question and the expression that answers it: inlining a worked solution's annotations into one
expression, and turning a question into a template whose numbers are slots. No torch, no model: pure text.

- `inline_annotations(reasoning, answer, question)`: a teacher that reasons first writes `<<90*7=630>> ...
  <<630-25=605>>`; the student's Answer line needs one expression over the question's numbers, `90*7-25`, so each
  earlier result quoted in a later expression is replaced by the expression that made it. The result must use
  only the question's numbers (and a few unit constants) and evaluate to the answer, or it is None.
- `Template.of(question, expression)`: the question's numbers that the expression uses become slots (each must
  appear once in the question, with distinct values); `instantiate(rng)` draws new numbers of the same kind
  (whole or decimal, roundness, percent), and the calculator computes the new answer. `substitute(reasoning)`
  carries a worked solution over to the new numbers, recomputing every annotation in order.
"""
from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass

from edgedistill.calculator import ANNOTATION, CalculatorError, evaluate, format_number, numbers_match

# Numbers an expression may use without the question showing them: unit factors, percent, rounding.
CONSTANTS = frozenset({"1", "2", "3", "5", "9", "10", "12", "24", "32", "60", "100", "1000", "3600", "10000",
                       "25.4", "7", "52", "365"})
UNIT_FACTORS = frozenset({"60", "100", "1000", "3600", "10000", "25.4"})   # never a template's slot
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d])")
LITERAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")   # a number inside an expression (no separators)
_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19, "dozen": 12, "half": 0.5, "quarter": 0.25}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_TENS) + r")(?:[- ](" + "|".join(k for k in _UNITS if _UNITS[k] < 10)
                          + r"))?\b|\b(" + "|".join(_UNITS) + r")\b", re.I)


def key(value: float) -> str:
    """The one text a number is compared by: the calculator's format (`7.50` and `7.5` are one number)."""
    return format_number(value)


def question_numbers(text: str) -> set[str]:
    """Every number a question shows, in digits (`1,200` -> 1200) or in words (`twelve`, `forty-five`, `half`)."""
    found = set(shown_numbers(text))
    for match in _WORD_NUMBER.finditer(text):
        tens, unit, alone = match.groups()
        value = _TENS[tens.lower()] + (_UNITS[unit.lower()] if unit else 0) if tens else _UNITS[alone.lower()]
        found.add(key(value))
    return found


def shown_numbers(text: str) -> list[str]:
    """The numbers a text writes in digits, in order, as `key`s (`1,200` -> 1200); repeats kept."""
    return [key(float(m.group(0).replace(",", ""))) for m in NUMBER.finditer(text)]


def literals(expression: str) -> list[str]:
    return [key(float(m)) for m in LITERAL.findall(expression)]


def over_question_numbers(expression: str, question: str) -> bool:
    """Does the expression use only numbers the question shows, and unit constants?"""
    allowed = question_numbers(question) | CONSTANTS
    return all(n in allowed for n in literals(expression))


ASKS_ROUNDING = re.compile(r"decimal|nearest|round|whole|significant", re.I)


def inline_annotations(reasoning: str, answer: str, question: str) -> str | None:
    """One expression over the question's numbers that computes `answer`, from a solution's annotations; None when
    the annotations do not lead to it that way. The last annotation whose value is the answer is the one inlined;
    a last value that only rounds to the answer is wrapped in the seed set's rounding pattern when the question asks
    for rounding, and left bare when it does not (the answer's digits are then only how the value was printed)."""
    shown = question_numbers(question)
    made: dict[str, str] = {}           # an earlier result's value -> the inlined expression that made it
    steps: list[tuple[str, float]] = []
    for expr, _ in ANNOTATION.findall(reasoning):
        try:
            value = evaluate(expr)
        except CalculatorError:
            return None
        inlined = LITERAL.sub(lambda m: m.group(0) if key(float(m.group(0))) in shown or key(float(m.group(0)))
                              not in made else f"({made[key(float(m.group(0)))]})", expr.replace(" ", ""))
        inlined = simplify(inlined)
        made.setdefault(key(value), inlined)
        steps.append((inlined, value))
    for inlined, value in reversed(steps):
        if math.isclose(value, float(answer), rel_tol=1e-9, abs_tol=1e-9):
            return _checked(inlined, answer, question)
    if steps and not ASKS_ROUNDING.search(question):   # 0.7407 is only how 0.74074... was printed: nothing to
        return _checked(steps[-1][0], answer, question)  # round, so no round() for the student to copy
    if steps:   # "72.768, so 72.8 to one decimal place": the rounding the question asks for, in the seeds' pattern
        inlined, value = steps[-1]
        decimals = len(answer.split(".")[1]) if "." in answer else 0
        if round(value, decimals) == round(float(answer), decimals):
            scale = 10 ** decimals
            wrapped = f"round({inlined})" if not decimals else f"round(({inlined})*{scale})/{scale}"
            return _checked(simplify(wrapped), answer, question)
    return None


def _checked(expression: str, answer: str, question: str) -> str | None:
    try:
        ok = numbers_match(answer, evaluate(expression))
    except CalculatorError:
        return None
    return expression if ok and over_question_numbers(expression, question) else None


def simplify(expression: str) -> str:
    """Drop parentheses that do not change the value (`(90*7)-25` -> `90*7-25`), by printing Python's own tree;
    the expression is returned unchanged when it is not one Python parses."""
    try:
        return ast.unparse(ast.parse(expression, mode="eval")).replace(" ", "")
    except (SyntaxError, ValueError, RecursionError):
        return expression


@dataclass(frozen=True)
class Slot:
    text: str          # the number as the question writes it
    start: int         # where in the question
    end: int
    decimals: int
    grouped: bool      # written with thousands separators
    percent: bool      # followed by % or "percent"


@dataclass(frozen=True)
class Template:
    """A question whose numbers (those its expression uses) are slots the calculator refills."""
    question: str
    expression: str
    answer: str
    slots: tuple[Slot, ...]

    @classmethod
    def of(cls, question: str, expression: str, answer: str) -> "Template | None":
        """None when a number of the expression (other than a unit constant) is missing from the question or shown
        more than once (a new draw could not say which is which)."""
        spans, values = list(NUMBER.finditer(question)), shown_numbers(question)
        used = [n for n in dict.fromkeys(literals(expression)) if n not in UNIT_FACTORS]   # 60 min, 100 % stay
        slots = []
        for number in used:
            if values.count(number) != 1:
                return None
            match = spans[values.index(number)]
            after = question[match.end():match.end() + 9].lower()
            slots.append(Slot(match.group(0), match.start(), match.end(), len(match.group(2) or ""),
                              "," in match.group(0), after.startswith(("%", " %", " percent"))))
        return cls(question, expression, answer, tuple(sorted(slots, key=lambda s: s.start))) if slots else None

    def asks_percent(self) -> bool:
        return bool(re.search(r"percent|%", self.question[max(s.end for s in self.slots):], re.I)) or \
            bool(re.search(r"(in|as a) (percent|%)|what percent|percentage", self.question, re.I))

    def instantiate(self, rng: random.Random, tries: int = 20) -> tuple[str, str, str, dict[str, str]] | None:
        """(question, expression, answer, {old number: new}) with new numbers, or None after `tries` draws that
        gave no clean answer (negative, more decimals than the original, a whole answer turned fractional)."""
        whole_answer = "." not in self.answer
        answer_decimals = 0 if whole_answer else len(self.answer.split(".")[1])
        for _ in range(tries):
            new = [draw_like(slot, rng) for slot in self.slots]
            olds = [key(float(s.text.replace(",", ""))) for s in self.slots]
            if len(set(new)) < len(new) or new == olds or not same_order(olds, new):
                continue
            mapping = dict(zip(olds, new))
            expression = LITERAL.sub(lambda m: mapping.get(key(float(m.group(0))), m.group(0)), self.expression)
            try:
                value = evaluate(expression)
            except CalculatorError:
                continue
            if value <= 0 or abs(round(value, max(answer_decimals, 2)) - value) > 1e-9:
                continue
            if whole_answer and abs(value - round(value)) > 1e-9 and "round" not in self.expression:
                continue
            if self.asks_percent() and float(self.answer) <= 100 < value:   # an OEE of 125% is no question
                continue
            question = self.question
            for slot, number in sorted(zip(self.slots, new), key=lambda pair: -pair[0].start):
                shown = f"{float(number):,.{slot.decimals}f}" if slot.grouped else \
                    f"{float(number):.{slot.decimals}f}"
                question = question[:slot.start] + shown + question[slot.end:]
            return question, expression, key(value), mapping
        return None


def same_order(olds: list[str], news: list[str]) -> bool:
    """New numbers in the same order as the old ones (good parts stay fewer than parts made, the new changeover
    time shorter than the old)."""
    pairs = [(float(a), float(b)) for a, b in zip(olds, news)]
    return all((a1 < a2) == (b1 < b2) for i, (a1, b1) in enumerate(pairs) for a2, b2 in pairs[i + 1:] if a1 != a2)


def draw_like(slot: Slot, rng: random.Random) -> str:
    """A new number of the same kind as `slot`: same decimals, similar roundness, 0.6x-1.6x its size, a percent
    stays between 1 and 99."""
    old = float(slot.text.replace(",", ""))
    if slot.percent:
        low, high = max(1.0, old * 0.8), min(99.0, max(old * 1.2, old + 2))
    else:
        low, high = old * 0.6, old * 1.6
    step = 10 ** -slot.decimals
    if not slot.decimals:
        whole = int(old)
        step = next((s for s in (100, 50, 10, 5) if whole >= 2 * s and whole % s == 0), 1)
    value = round(rng.uniform(low, high) / step) * step
    value = max(step, value)
    return key(round(value, slot.decimals))


def substitute(reasoning: str, mapping: dict[str, str]) -> str | None:
    """The reasoning with the template's new numbers: each annotation's expression gets the new numbers (the
    question's and the results of earlier annotations) and is recomputed; numbers in the text around them follow.
    None when an annotation no longer evaluates or two different numbers would map to one (ambiguous)."""
    mapping = dict(mapping)
    pieces, cut = [], 0
    for match in ANNOTATION.finditer(reasoning):
        expr = LITERAL.sub(lambda m: mapping.get(key(float(m.group(0))), m.group(0)), match.group(1))
        try:
            old_value, new_value = evaluate(match.group(1)), evaluate(expr)
        except CalculatorError:
            return None
        old_key, new_key = key(old_value), key(new_value)
        if mapping.get(old_key, new_key) != new_key:
            return None
        mapping[old_key] = new_key
        pieces += [_renumber(reasoning[cut:match.start()], mapping), f"<<{expr}={new_key}>>"]
        cut = match.end()
    pieces.append(_renumber(reasoning[cut:], mapping))
    return "".join(pieces)


def _renumber(text: str, mapping: dict[str, str]) -> str:
    def swap(match: re.Match) -> str:
        old = key(float(match.group(0).replace(",", "")))
        if old not in mapping:
            return match.group(0)
        decimals, new = len(match.group(2) or ""), float(mapping[old])
        if decimals and is_whole(new * 10 ** decimals):   # keep "7.50" written with two decimals
            return f"{new:,.{decimals}f}" if "," in match.group(0) else f"{new:.{decimals}f}"
        return f"{int(new):,}" if "," in match.group(0) and is_whole(new) else mapping[old]
    return NUMBER.sub(swap, text)


def is_whole(value: float) -> bool:
    return math.isclose(value, round(value), abs_tol=1e-9)
