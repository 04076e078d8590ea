"""The factory-floor Q&A page: the answer first, the computation it rests on, the reasoning, and a confidence.
This module only builds the page; answering is serve/answering.py, feedback serve/feedback.py.

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

import os
import sys
import time
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # before gradio is imported: no usage reports
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgedistill import UserError
from edgedistill.checkers import extract_answer
from edgedistill.formats import computations, readable, split_stream
from edgedistill.serve.answering import QA, Confidence, band, chosen
from edgedistill.serve.feedback import FeedbackLog


MAX_SHOWN_ROWS = 20   # rows the page's table shows; the rest are counted


def cell(text: str) -> str:
    """A value as a Markdown table cell: pipes and markup escaped, so a cell cannot break the table or the page."""
    return "".join("\\" + c if c in "|*_`[]<>#\\" else c for c in text)[:120]


def evidence_markdown(calls) -> str:
    """The queries the answer rests on, each with the rows it read as a small table, or its one-line refusal."""
    parts = []
    for done in calls:
        parts.append(f"**Query:** `{done.query.replace('`', '')}`")
        if done.error:
            parts.append(f"*{'Not in the tables: ' if done.missing else ''}{cell(done.error)}*")
        elif not done.cells:
            parts.append("*No rows: not in the tables.*")
        else:
            columns = done.result.columns
            parts += ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
            parts += ["| " + " | ".join(cell(c) for c in row) + " |" for row in done.cells[:MAX_SHOWN_ROWS]]
            if len(done.cells) > MAX_SHOWN_ROWS or done.result.truncated:
                parts.append(f"*... {len(done.cells)}{'+' if done.result.truncated else ''} rows in all*")
    return "\n".join(parts)


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


UPDATES_PER_S = 10
NOT_ANSWERED = ("", "", "", [])   # the thumbs' (question, answer, answer type, options) before an answer is complete


def build_app(qa: QA, feedback: FeedbackLog, model_name: str):
    import gradio as gr
    settings = qa.settings

    modes = qa.modes
    default_mode = next((name for name, kind in modes.items() if kind == settings.answer_type), None)

    def shown_work(text: str) -> str:
        """The calculator's computations and the tables' queries with their rows."""
        rows = evidence_markdown(qa.tool_calls(text))
        work = computations(text)
        return rows if rows and work == "Computation: none" else "\n\n".join(p for p in (work, rows) if p)

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
            asked = qa.question(question, modes.get(mode or default_mode), options)
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
            asked = asking.answered_as          # a query on the Answer line: compared by the rows it returned
            model_answer = extract_answer(text, asked.answer_type)
            final = (f"## {chosen(asked, shown) or '(no answer)'}", shown_work(text),
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
        except OSError:   # the console says where and why; a client is not told the server's paths
            traceback.print_exc(file=sys.stderr)
            return "Could not save the feedback: tell whoever runs this app (the console has details)."

    def thumbs(verdict: str):
        """The click of a thumb: about the question answered and its answer (the box may have been edited since)."""
        return lambda answered, correction: give_feedback(answered[0], answered[1], verdict, correction,
                                                          *answered[2:])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],   # no Google web fonts
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="edgedistill: shop-floor Q&A", analytics_enabled=False) as app:
        tables = f" Tables: {', '.join(t.name for t in qa.tables.tables)}." if qa.tables is not None else ""
        gr.Markdown(f"### Shop-floor Q&A\nModel: `{model_name}`. Runs on this machine; nothing is sent anywhere."
                    f"{tables}")
        question = gr.Textbox(label="Question", lines=2, elem_id="question", placeholder=settings.examples[0]
                              if settings.examples else "Type a question")
        with gr.Row():
            mode = gr.Radio(list(modes), value=default_mode or "Number (calculator)", label="Kind of question",
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
