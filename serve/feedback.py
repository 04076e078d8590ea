"""Thumbs and corrections from the page (and its API route), kept as seed questions for the next training round."""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from edgedistill import UserError
from edgedistill.config import ServeConfig
from edgedistill.records import ANSWER_TYPES, AppendLog, question_from_dict
from edgedistill.serve.answering import check_options


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
        of that kind (none given: the app's answer type, no options). Every field is checked as the config and the
        seed loader check theirs, so no row is written that the next training round would refuse; the reply says
        what was refused, and names the file without its folder (a client need not know the server's paths)."""
        try:
            row = self.row(question, model_answer, verdict, correction, answer_type, options)
        except UserError as exc:
            return f"{exc} Nothing was saved."
        target = self.path if "answer" in row else self.unanswered
        with self.lock:
            self.logs[target].append([row])
        kept = f"with reference answer {row['answer']!r}" if "answer" in row \
            else "without an answer (for an expert to fill in)"
        return f"Thanks: saved to `{target.name}` {kept}."

    def row(self, question, model_answer, verdict, correction, answer_type, options) -> dict:
        """The row `record` appends, or UserError saying which field is wrong."""
        for name, value in (("question", question), ("model answer", model_answer), ("verdict", verdict),
                            ("correction", correction), ("answer type", answer_type)):
            if value is not None and not isinstance(value, str):
                raise UserError(f"The {name} must be text, got {type(value).__name__}.")
        question, correction = (question or "").strip(), (correction or "").strip()
        model_answer, answer_type = model_answer or "", answer_type or self.answer_type
        if not question:
            raise UserError("Ask a question first; feedback is about an answer.")
        if verdict not in ("up", "down"):
            raise UserError(f"The verdict must be 'up' or 'down', got {str(verdict)[:20]!r}.")
        if answer_type not in ANSWER_TYPES:
            raise UserError(f"The answer type must be one of {', '.join(ANSWER_TYPES)}, got {answer_type[:20]!r}.")
        check_options(list(options) if isinstance(options, tuple) else (options or []))
        for what, text, limit in (("question", question, self.max_question_chars),
                                  ("correction", correction, MAX_CORRECTION_CHARS),
                                  ("model answer", model_answer, MAX_MODEL_ANSWER_CHARS)):
            if len(text) > limit:
                raise UserError(f"The {what} is {len(text)} characters long; the limit is {limit}.")
        reference = correction or (model_answer.strip() if verdict == "up" else "")
        row = {"id": f"feedback-{time.time_ns()}", "question": question, "answer_type": answer_type,
               **({"options": list(options)} if options else {}),
               "verdict": verdict, "model_answer": model_answer, "model": self.model, "source": "feedback",
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if reference:   # a correction is a person's word; a thumbs-up keeps the model's own answer
            row["answer"], row["checked_by"] = reference, "human" if correction else "model"
        try:
            question_from_dict(row, "feedback", row["id"])     # what the next round's loader will ask of it
        except UserError:
            if correction or "answer" not in row:
                raise
            # a thumbs-up on an answer its kind cannot read (a label outside the set): the question is kept
            # without it, for an expert to answer, rather than the thumb lost
            del row["answer"], row["checked_by"]
            question_from_dict(row, "feedback", row["id"])
        return row


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
