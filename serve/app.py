"""The factory-floor Q&A app: the answer first, the computation it rests on, the reasoning, and a confidence.

    edgedistill serve --model runs/quickstart

One question, in order:
1. the answer streams in as the model writes its `Answer:` line; the calculator fills each `<<expr=` with its value
   while decoding (the same runtime evaluation uses), and the page lists those computations;
2. the reasoning streams into a collapsed section (skipped when "answer only" is ticked: an answer-first model
   stops after its Answer line);
3. the confidence: `samples` short sampled answers are compared with the greedy one, and the agreement is mapped
   through the model's calibration file (the eval stage writes it: how often answers with that agreement were
   right on held-out questions) into a probability with a plain-language band. Without a calibration file the
   page shows raw agreement and says so.
Thumbs up / down and corrections go to a JSONL file the teacher stage reads as seed questions; they are about the
question that was answered (kept with its answer), not whatever the question box holds when a thumb is clicked.
The port and the feedback file are checked before the model loads, so a mistake there costs no load time.

Offline by default: 127.0.0.1, Gradio analytics off, system fonts (no web fonts, no CDN), no share link.
"""
from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported: no usage reports
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgedistill import UserError  # noqa: E402
from edgedistill.calculator import ANNOTATION, CalculatorError, evaluate, format_number  # noqa: E402
from edgedistill.calibration import Calibration  # noqa: E402
from edgedistill.checkers import canonical, extract_answer  # noqa: E402
from edgedistill.confidence import Signals, signals_of, vetoed  # noqa: E402
from edgedistill.config import ServeConfig  # noqa: E402
from edgedistill.datasets import work_order_question  # noqa: E402
from edgedistill.formats import chat  # noqa: E402
from edgedistill.generation import Sampling  # noqa: E402
from edgedistill.generation.scheduler import Reply, scheduler_for  # noqa: E402
from edgedistill.records import AppendLog, Question, load_questions  # noqa: E402

OPEN_ANNOTATION = "<<"
# What the page asks for, and the answer type each mode reads and compares answers as.
MODES = {"Number (calculator)": "number", "Options": "choice", "Failure code": "label"}
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


def readable(text: str) -> str:
    """Model text as a person reads it: each `<<expr=value>>` becomes its value; a half-written one is hidden."""
    text = ANNOTATION.sub(lambda m: m.group(2).strip(), text)
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


def confidence_markdown(c: Confidence, supervisor_below: float) -> str:
    if not c.samples:
        return "Confidence not measured (samples = 0)."
    lines = [f"### Confidence {c.probability:.0%} · {band(c.probability, supervisor_below, c.likely_right_at)}",
             f"{c.agreeing} of {c.samples} sampled answers agree with this one."]
    if c.signals is not None and not c.signals.grounded:
        lines.append("**The computation uses a number the question does not show**: check where it comes from.")
    if c.calibration and c.calibration.combined:
        cal = c.calibration
        lines.append(f"Calibrated on {cal.n} questions of `{cal.data or 'an evaluation set'}`, worded apart from "
                     f"the training questions, from the samples' agreement, whether they compute it the same way, "
                     f"whether the computation uses the question's own numbers and whether the answer is sane.")
    elif c.calibration:
        cal = c.calibration
        lines.append(f"Calibrated on {cal.n} questions of `{cal.data or 'an evaluation set'}`: answers with "
                     f"{c.agreeing} of {cal.k} agreeing were right {c.probability:.0%} of the time.")
    else:
        lines.append("**Not calibrated**: this model has no calibration file (`edgedistill eval --calibrate` "
                     "writes one), so this is raw agreement, which overstates how often a small model is right.")
    if c.others:
        lines.append("Other answers sampled: " + ", ".join(c.others) + ".")
    if c.token_probability is not None:
        lines.append(f"The model's own probability of the answer's tokens: {c.token_probability:.0%} "
                     f"(not calibrated).")
    return "  \n".join(lines)


class QA:
    """The model behind the page and the API: a question's greedy answer and its `samples` confidence samples are
    submitted together to the scheduler, which decodes them with everyone else's (continuous batching on
    llama.cpp; one question at a time on other backends)."""

    def __init__(self, generator, settings: ServeConfig, calibration: Calibration | None = None, scheduler=None):
        self.generator, self.settings, self.calibration = generator, settings, calibration
        self.samples = calibration.k if calibration else settings.samples
        self.temperature = calibration.temperature if calibration else settings.temperature
        # the system turn every question is asked with: decoded once, not once per question
        self.scheduler = scheduler or scheduler_for(generator, shared_turns=chat("")[:1])
        self._labels: list[str] | None = None

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
        if mode == "label":
            return work_order_question(text, self.labels)
        if mode == "choice":
            body, options = with_options(text, options_text)
            if not options:
                raise UserError("Options mode needs the options: one a line in the Options box, or in the question "
                                "as lines 'A. ...', 'B. ...'")
            return Question(id="app", question=body, answer_type="choice", options=options)
        return Question(id="app", question=text, answer_type=mode)

    def ask(self, question: Question | str, answer_only: bool, max_new_tokens: int | None = None) -> Asking:
        """Start answering: the greedy row (the answer streamed) and the confidence samples, decoded together."""
        q = question if isinstance(question, Question) else self.question(question)
        greedy = Sampling(max_new_tokens=max_new_tokens or self.settings.max_new_tokens, stop_after_answer=answer_only)
        samples = [Sampling(max_new_tokens=48, temperature=self.temperature, stop_after_answer=True, seed=1 + i)
                   for i in range(self.samples)]
        return Asking(self, q, self.scheduler.submit(chat(q), [greedy, *samples]))

    def confidence(self, q: Question, answer: str | None, answer_probabilities: list[float],
                   sampled_texts: list[str], text: str | None = None) -> Confidence:
        """`answer`: the greedy answer as read; `text`: the greedy completion it was read from (its computation),
        None where only the answer is known."""
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

    def cancel(self) -> None:
        self.reply.cancel()


MAX_CORRECTION_CHARS = 1000      # a corrected answer is a number or a short phrase
MAX_MODEL_ANSWER_CHARS = 4000    # an answer line of max_new_tokens tokens; bounds what /feedback is sent


class FeedbackLog:
    """Thumbs and corrections, appended (fsync'd) to a JSONL file whose rows the teacher stage reads as seed
    questions with reference answers: thumbs up keeps the model's answer, a correction replaces it. Thumbs down
    without a correction has no reference, so it goes to `<name>.unanswered.jsonl`, for an expert to answer.
    Texts longer than a question the app answers, or than an answer, are refused: /feedback is open to any client."""

    def __init__(self, path: str | Path, model: str, answer_type: str,
                 max_question_chars: int = ServeConfig.max_question_chars):
        self.path, self.model, self.answer_type = Path(path), model, answer_type
        self.max_question_chars = max_question_chars
        self.unanswered = self.path.with_name(self.path.stem + ".unanswered.jsonl")
        for target in (self.path, self.unanswered):
            check_writable(target)
        # opened once: AppendLog repairs a torn last line when it opens, which reads the whole file
        self.logs = {self.path: AppendLog(self.path, key="id"), self.unanswered: AppendLog(self.unanswered, key="id")}
        self.lock = threading.Lock()

    def record(self, question: str, model_answer: str, verdict: str, correction: str = "", answer_type: str = "",
               options: list[str] | None = None) -> str:
        """One verdict; `answer_type` and `options` (a choice's lettered options, a label set) make the row a seed
        of that kind (none given: the app's answer type, no options)."""
        question, correction = (question or "").strip(), (correction or "").strip()
        if not question:
            return "Ask a question first; feedback is about an answer."
        if verdict not in ("up", "down"):
            return f"verdict must be 'up' or 'down', got {verdict!r}"
        model_answer = model_answer or ""
        for what, text, limit in (("question", question, self.max_question_chars),
                                  ("correction", correction, MAX_CORRECTION_CHARS),
                                  ("model answer", model_answer, MAX_MODEL_ANSWER_CHARS)):
            if len(text) > limit:
                return f"The {what} is {len(text)} characters long; the limit is {limit}. Nothing was saved."
        reference = correction or (model_answer.strip() if verdict == "up" else "")
        row = {"id": f"feedback-{time.time_ns()}", "question": question, "answer_type": answer_type or self.answer_type,
               **({"options": [str(o) for o in options]} if options else {}),
               "verdict": verdict, "model_answer": model_answer, "model": self.model, "source": "feedback",
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if reference:   # a correction is a person's word; a thumbs-up keeps the model's own answer
            row["answer"], row["checked_by"] = reference, "human" if correction else "model"
        target = self.path if reference else self.unanswered
        with self.lock:
            self.logs[target].append([row])
        kept = f"with reference answer {reference!r}" if reference else "without an answer (for an expert to fill in)"
        return f"Thanks: saved to `{target}` {kept}."


def check_writable(path: Path) -> None:
    """Pre-flight for a file appended to later: its folder takes a new file (the file, when there is one, takes
    appends), so a bad --feedback is reported at start, not after the model has loaded or on the first click."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.open("a").close()
        else:
            tempfile.TemporaryFile(dir=path.parent).close()    # leaves no empty file for the teacher to read
    except OSError as exc:
        raise UserError(f"cannot write the feedback file {path} ({exc.strerror or exc}): give --feedback a file "
                        f"in a folder this user can write") from None


UPDATES_PER_S = 10
NOT_ANSWERED = ("", "", "", [])   # the thumbs' (question, answer, answer type, options) before an answer is complete


def build_app(qa: QA, feedback: FeedbackLog, model_name: str):
    import gradio as gr
    settings = qa.settings

    default_mode = next((name for name, kind in MODES.items() if kind == settings.answer_type), None)

    def answer(question: str, answer_only: bool, mode: str | None = None, options: str = ""):
        """Streams (answer, computation, reasoning, confidence, status, what the thumbs are about). `mode`: Number
        (calculator), Options (a choice: the options one a line in `options`, or written in the question) or
        Failure code (a work-order line, answered with the configured label set). The thumbs' record is set only once
        the answer is complete, so feedback is always about a question and the answer given to it."""
        question = (question or "").strip()
        if not question:
            yield only_status("Type a question first.")
            return
        if len(question) > settings.max_question_chars:
            yield only_status(f"The question is {len(question)} characters long; the limit is "
                              f"{settings.max_question_chars}. Shorten it and ask again.")
            return
        text, asking = "", None
        try:
            asked = qa.question(question, MODES.get(mode or default_mode), options)
            asking = qa.ask(asked, answer_only)
            shown_before, last_update = "", 0.0
            for text, _ in asking.stream():
                shown, reasoning, _ = split_stream(text)
                shown = readable(shown)          # empty until the calculator has written the value
                # at most UPDATES_PER_S page updates (each is a diff sent to the browser: with a shop of users
                # their Python costs the decode), but the answer's first appearance at once
                if time.monotonic() - last_update >= 1 / UPDATES_PER_S or (shown and not shown_before):
                    last_update, shown_before = time.monotonic(), shown
                    yield (f"## {shown}" if shown else "", computations(text), readable(reasoning), "", "",
                           NOT_ANSWERED)
            shown, reasoning, _ = split_stream(text)
            model_answer = extract_answer(text, asked.answer_type)
            final = (f"## {chosen(asked, shown) or '(no answer)'}", computations(text),
                     readable(reasoning) or ("" if answer_only else "(the model gave no reasoning)"))
            answered = (asked.question, model_answer or "", asked.answer_type, asked.options or [])
            yield *final, "*measuring confidence...*", "", answered
            confidence = asking.confidence(model_answer)
            yield *final, confidence_markdown(confidence, settings.supervisor_below), "", answered
        except UserError as exc:
            yield only_status(f"Could not answer: {exc}")
        except Exception as exc:   # the page says what happened; the console keeps the traceback
            traceback.print_exc(file=sys.stderr)
            yield only_status(f"The model failed while answering ({type(exc).__name__}: {exc}). Try again; if it "
                              f"keeps failing, tell whoever runs this app (the console has details).")
        finally:   # a user who closed the page: their rows leave the batch
            if asking is not None:
                asking.cancel()

    def only_status(status: str) -> tuple:
        return "", "", "", "", status, NOT_ANSWERED

    def give_feedback(question: str, model_answer: str, verdict: str, correction: str, answer_type: str = "",
                      options: list[str] | None = None) -> str:
        """Thumbs 'up' or 'down' for an answer, with an optional corrected answer; `answer_type` and `options` as
        the question was asked (a choice's options, a label set)."""
        try:
            return feedback.record(question, model_answer, verdict, correction, answer_type, options)
        except OSError as exc:
            return f"Could not save the feedback ({exc}); check that {feedback.path.parent} is writable."

    def thumbs(verdict: str):
        """The click of a thumb: about the question answered and its answer (the box may have been edited since)."""
        return lambda answered, correction: give_feedback(answered[0], answered[1], verdict, correction,
                                                          *answered[2:])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],   # no Google web fonts
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="edgedistill: shop-floor Q&A", analytics_enabled=False) as app:
        gr.Markdown(f"### Shop-floor Q&A\nModel: `{model_name}`. Runs on this machine; nothing is sent anywhere.")
        question = gr.Textbox(label="Question", lines=2, elem_id="question", placeholder=settings.examples[0]
                              if settings.examples else "Type a question")
        with gr.Row():
            mode = gr.Radio(list(MODES), value=default_mode or "Number (calculator)", label="Kind of question",
                            elem_id="mode")
            options = gr.Textbox(label="Options (for Options: one a line, or write them in the question as A. ..., "
                                       "B. ...)", value="", lines=2, elem_id="options", scale=2)
        with gr.Row():
            ask = gr.Button("Ask", variant="primary", elem_id="ask")
            answer_only = gr.Checkbox(label="Answer only (faster: no reasoning)", value=False, elem_id="answer-only")
        if settings.examples:
            gr.Examples(examples=[[e] for e in settings.examples], inputs=question, label="Examples")
        status = gr.Markdown(label="Status", elem_id="status")
        given = gr.State(NOT_ANSWERED)          # (the question answered, the model's answer, ...), for the thumbs
        answer_box = gr.Markdown(label="Answer", elem_id="answer")
        computation = gr.Markdown(label="Computation", elem_id="computation")
        confidence = gr.Markdown(label="Confidence", elem_id="confidence")
        with gr.Accordion("Reasoning", open=False, elem_id="reasoning"):
            rationale = gr.Markdown(label="Reasoning", elem_id="rationale")
        with gr.Row():
            up = gr.Button("Right", elem_id="thumbs-up", size="sm")
            down = gr.Button("Wrong", elem_id="thumbs-down", size="sm")
            correction = gr.Textbox(label="Correct answer (optional)", elem_id="correction", scale=3)
        feedback_status = gr.Markdown(elem_id="feedback-status")

        outputs = [answer_box, computation, rationale, confidence, status, given]
        for trigger in (ask.click, question.submit):
            trigger(answer, inputs=[question, answer_only, mode, options], outputs=outputs,
                    api_name="answer" if trigger == ask.click else None,
                    api_visibility="public" if trigger == ask.click else "private")
        for button, verdict in ((up, "up"), (down, "down")):
            button.click(thumbs(verdict), inputs=[given, correction], outputs=feedback_status,
                         api_visibility="private")
        gr.api(give_feedback, api_name="feedback")
    return app, theme
