"""Answering one question: its kind (a number through the calculator, one of lettered options, a work order's
failure code), the model asked through the scheduler, and the confidence of the answer with its band. The page
(serve/app.py) and the OpenAI-compatible API (serve/api.py) both answer through this module; neither knows the
other.

    qa = QA(generator, settings, calibration)
    asking = qa.ask(qa.question(text, "choice", options_text), answer_only=False)
    for completion, answer_probabilities in asking.stream(): ...
    confidence = asking.confidence(extract_answer(completion, "choice"))

The confidence: `samples` short sampled answers are compared with the greedy one, and their signals (agreement,
the expression's agreement, grounded, sane: edgedistill/confidence.py) are mapped through the model's calibration
file (the eval stage writes it) into a probability with a plain-language band. Without a calibration file it is raw
agreement, and the page says so.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from edgedistill import UserError
from edgedistill.calibration import Calibration
from edgedistill.checkers import canonical, extract_answer
from edgedistill.confidence import Signals, signals_of, vetoed
from edgedistill.config import ServeConfig
from edgedistill.datasets import work_order_question
from edgedistill.formats import chat, readable
from edgedistill.generation import Sampling
from edgedistill.records import Question, load_questions
from edgedistill.serve.scheduler import Reply, scheduler_for
from edgedistill.table_queries import QUERY_ANNOTATION, queries

# Options a question may carry (the page's Options box, the API's edgedistill.options, feedback): the shipped sets
# have at most 22 of at most 116 characters; the bounds keep a client from filling the prompt or the feedback file.
MAX_OPTIONS = 64
MAX_OPTION_CHARS = 300
# What the page asks for, and the answer type each mode reads and compares answers as. "Plant data" is offered
# when the app was started with tables (`serve --tables`).
MODES = {"Number (calculator)": "number", "Options": "choice", "Failure code": "label", "Plant data": "rows"}
_OPTION_LINE = re.compile(r"^\s*\(?([A-Ha-h])[.)]\s+(\S.*?)\s*$")   # "A. current", "b) oil debris", "(C) noise"


def with_options(text: str, options_text: str = "") -> tuple[str, list[str] | None]:
    """The question and its lettered options ("A. current"): from the options box, one a line (letters added where
    missing), else from the question's own lines written "A. ...", "B) ..." (two at least); None when there are none."""
    given = [line.strip() for line in (options_text or "").splitlines() if line.strip()]
    if given:
        return text.strip(), [lettered(line, i) for i, line in enumerate(given)]
    lines = text.strip().splitlines()
    found = [line for line in lines if _OPTION_LINE.match(line)]
    if len(found) < 2:
        return text.strip(), None
    body = "\n".join(line for line in lines if not _OPTION_LINE.match(line)).strip()
    return body, [lettered(line, i) for i, line in enumerate(found)]


def check_options(options) -> list[str]:
    """`options` as given, or UserError: a list of at most MAX_OPTIONS strings of at most MAX_OPTION_CHARS."""
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise UserError("options must be a list of strings")
    if len(options) > MAX_OPTIONS:
        raise UserError(f"{len(options)} options; at most {MAX_OPTIONS}")
    if any(len(o) > MAX_OPTION_CHARS for o in options):
        raise UserError(f"an option is longer than {MAX_OPTION_CHARS} characters")
    return options


def lettered(line: str, index: int) -> str:
    match = _OPTION_LINE.match(line)
    return f"{match.group(1).upper()}. {match.group(2)}" if match else f"{chr(ord('A') + index)}. {line.strip()}"


def chosen(q: Question, answer: str) -> str:
    """The answer as the page heads it: a choice's option with its letter, a label as the set spells it; a number
    (or an answer outside the set) as the model wrote it."""
    if q.answer_type in ("choice", "label") and q.options:
        found = canonical(answer, q)
        if found and q.answer_type == "choice":
            return next((o for o in q.options if o.startswith(f"{found}.")), found)
        if found:
            return found
    return readable(answer)


@dataclass
class Confidence:
    agreeing: int
    samples: int
    probability: float                    # calibrated when `calibration` is set, else agreeing / samples
    calibration: Calibration | None
    token_probability: float | None       # geometric mean of the model's probabilities of the answer's tokens
    others: list[str] = field(default_factory=list)
    signals: Signals | None = None        # what the probability was read from (edgedistill/confidence.py)

    @property
    def likely_right_at(self) -> float | None:
        """The calibration's "likely right" threshold for this answer: None without one, and None for an answer
        the signals veto (a number the question does not show, an answer that is not of its type)."""
        if self.calibration is None or (self.calibration.combined and self.signals and vetoed(self.signals)):
            return None
        return self.calibration.likely_right_at


def band(probability: float, supervisor_below: float, likely_right_at: float | None = None) -> str:
    """"likely right" only from the calibrated probability at which the calibration's dev answers were at least 90%
    right (`likely_right_at`); without a calibration that says so (none, or an older file), never."""
    if likely_right_at is not None and probability >= likely_right_at:
        return "likely right"
    if probability >= supervisor_below:
        return "probably right: double-check if it matters"
    return "unsure: check with a supervisor"


class QA:
    """The model behind the page and the API: a question's greedy answer and its `samples` confidence samples are
    submitted together to the scheduler, which decodes them with everyone else's (continuous batching on
    llama.cpp; one question at a time on other backends). With `tables` (a tables.TableTool) every question is
    asked with their schema: the student decides whether it needs them, the calculator, or neither."""

    def __init__(self, generator, settings: ServeConfig, calibration: Calibration | None = None, scheduler=None,
                 tables=None, value_hints: bool = False, name_hints: bool = False):
        self.generator, self.settings, self.calibration = generator, settings, calibration
        self.tables = tables
        self.schema, self.values = None, None
        if tables is not None:
            from edgedistill.table_base import schema_text
            from edgedistill.table_values import ValueIndex
            self.schema = schema_text(tables.tables)
            self.values = ValueIndex(tables, names=name_hints) if value_hints else None
        self.samples = calibration.k if calibration else settings.samples
        self.temperature = calibration.temperature if calibration else settings.temperature
        # the system turn every question is asked with: decoded once, not once per question
        system = chat(Question(id="app", question="", context=self.schema))[:1]
        self.scheduler = scheduler or scheduler_for(generator, shared_turns=system)
        self._labels: list[str] | None = None

    @property
    def modes(self) -> dict[str, str]:
        """The page's kinds of question: Plant data only when there are tables to ask about."""
        return {name: kind for name, kind in MODES.items() if kind != "rows" or self.tables is not None}

    @property
    def labels(self) -> list[str]:
        """The failure codes of "failure code" mode: the options of the first question of `settings.labels`."""
        if self._labels is None:
            first = load_questions(self.settings.labels, need_answers=False, limit=1)[0]
            if not first.options:
                raise UserError(f"serve.labels: {self.settings.labels} lists no options to use as failure codes")
            self._labels = list(first.options)
        return self._labels

    def question(self, text: str, mode: str | None = None, options_text: str = "") -> Question:
        """The question as the model is asked it, by the page's mode (an answer type; None: serve.answer_type)."""
        mode = mode or self.settings.answer_type
        if mode == "rows" and self.tables is None:
            raise UserError("Plant data needs tables: start the app with --tables (docs/tables.md)")
        if mode == "label":
            return work_order_question(text, self.labels)
        if mode == "choice":
            body, options = with_options(text, options_text)
            if not options:
                raise UserError("Options mode needs the options: one a line in the Options box, or in the question "
                                "as lines 'A. ...', 'B. ...'")
            check_options(options)
            return Question(id="app", question=body, answer_type="choice", options=options, context=self.schema)
        return Question(id="app", question=text, answer_type=mode, context=self.schema, hints=self.hints(text))

    def hints(self, text: str) -> str | None:
        """The names the question uses that the tables hold, with their table and column (value_hints), and with
        name_hints the columns and tables it names."""
        if self.values is None:
            return None
        from edgedistill.table_values import hint_line
        return hint_line(self.values.find(text))

    def ask(self, question: Question | str, answer_only: bool, max_new_tokens: int | None = None) -> Asking:
        """Start answering: the greedy row (the answer streamed) and the confidence samples, decoded together."""
        q = question if isinstance(question, Question) else self.question(question)
        greedy = Sampling(max_new_tokens=max_new_tokens or self.settings.max_new_tokens, stop_after_answer=answer_only,
                          tables=self.tables)
        # a query and its rows make a longer Answer line than a number: the samples get room for one
        sample_tokens = 48 if self.tables is None else 160
        samples = [Sampling(max_new_tokens=sample_tokens, temperature=self.temperature, stop_after_answer=True,
                            seed=1 + i, tables=self.tables) for i in range(self.samples)]
        return Asking(self, q, self.scheduler.submit(chat(q), [greedy, *samples]))

    def confidence(self, q: Question, answer: str | None, answer_probabilities: list[float],
                   sampled_texts: list[str], text: str | None = None) -> Confidence:
        """`answer`: the greedy answer as read; `text`: the greedy completion it was read from (its computation),
        None where only the answer is known."""
        answered = as_answered(q, text)
        if answered is not q:       # a query on the Answer line: the answer is the rows it returned
            q, answer = answered, extract_answer(text, "rows")
        token_probability = (math.exp(sum(math.log(max(p, 1e-12)) for p in answer_probabilities)
                             / len(answer_probabilities)) if answer_probabilities else None)
        if not self.samples:
            return Confidence(0, 0, 0.0, None, token_probability)
        sampled = [canonical(extract_answer(t, q.answer_type), q) for t in sampled_texts]
        mine = canonical(answer, q)
        signals = signals_of(q, text if text is not None else f"Answer: {answer or ''}", sampled_texts)
        agreeing = round(signals.agreement * self.samples)     # the signals counted it already
        probability = self.calibration.probability_of(signals) if self.calibration else agreeing / self.samples
        others = [f"{a} ({n})" for a, n in Counter(s or "no answer" for s in sampled if s != mine).most_common(3)]
        return Confidence(agreeing, self.samples, probability, self.calibration, token_probability, others, signals)


    def tool_calls(self, text: str) -> list:
        """The queries of a completion, run again for the rows behind them (tables.ToolCall each): the tool is
        read-only, so the rows are those the model was given."""
        if self.tables is None:
            return []
        from edgedistill.tables import call
        return [call(self.tables, query) for query in queries(text)]


def as_answered(q: Question, text: str | None) -> Question:
    """The question read by how it was answered: a plain question (the API's, a number by default) whose Answer
    line holds a query is read as a table answer, so its samples are compared by the rows they returned."""
    answer_line = (text or "").lstrip().partition("\n")[0]
    if q.answer_type in ("number", "text") and q.context and QUERY_ANNOTATION.search(answer_line):
        import dataclasses
        return dataclasses.replace(q, answer_type="rows")
    return q


class Asking:
    """One question in flight: `stream()` yields (completion so far, probabilities of the answer line's tokens);
    `confidence(answer)` waits for the samples; `cancel()` (the user left) stops its rows."""

    def __init__(self, qa: QA, q: Question, reply: Reply):
        self.qa, self.q, self.reply = qa, q, reply
        self.text, self.answer_probabilities = "", []

    def stream(self) -> Iterator[tuple[str, list[float]]]:
        for token in self.reply.stream():
            before = token.text[:-1] if token.text else ""
            if token.probability is not None and "\n" not in before.strip():
                self.answer_probabilities.append(token.probability)
            self.text = token.text
            yield token.text, self.answer_probabilities

    def confidence(self, answer: str | None) -> Confidence:
        return self.qa.confidence(self.q, answer, self.answer_probabilities, self.reply.texts()[1:], self.text)

    @property
    def answered_as(self) -> Question:
        """The question as its answer reads it (a query on the Answer line: a table answer)."""
        return as_answered(self.q, self.text)

    def cancel(self) -> None:
        self.reply.cancel()
