"""The OpenAI-compatible endpoint, in the app's process: every client a plant already has (the `openai` package,
Open WebUI, LangChain, curl) reaches the student with its calculator, on the same port as the page.

    GET  /v1/models
    POST /v1/chat/completions   {"messages": [{"role": "user", "content": "..."}], "stream": true}

- The question is the last user message (the student answers single questions; earlier turns are not sent to it).
  Options and failure codes: `"edgedistill": {"answer_type": "choice", "options": ["A. ...", ...]}` in the body, or
  options written in the question as lines `A. ...`; `"answer_type": "label"` asks a work-order line for its code.
- The reply is the answer-first text with each calculator annotation shown as its value
  ("Answer: 360\nReason: ..."); the calculator fills them while decoding, as in the page. Streamed, a half-written
  computation is held back until its value is in.
- The last chunk (and a reply that is not streamed) carries an `edgedistill` object: the answer as the page heads
  it, its computations, the confidence with its band, and the raw completion.
- The same loopback default as the page. With --auth/--auth-file a request needs `Authorization: Bearer
  USER:PASSWORD` (the openai package's `api_key="USER:PASSWORD"`); answers 401 otherwise.
The question is decoded by the same scheduler as the page's, so page and API users share one batch.
"""
from __future__ import annotations

import hmac
import json
import time
import uuid
from typing import Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgedistill import UserError
from edgedistill.checkers import extract_answer
from edgedistill.records import ANSWER_TYPES, Question
from edgedistill.serve.app import QA, Confidence, band, chosen, computations, readable, split_stream

OPEN = "<"    # a trailing "<" may start a calculator annotation: held back until the next token says


def question_of(body: dict, qa: QA) -> Question:
    """The question a chat-completions body asks, as the page would ask it; UserError says what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError("'messages' must be a non-empty list of {role, content}")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise UserError("no message with role 'user': the question is the last user message")
    text = message_text(users[-1].get("content"))
    if not text.strip():
        raise UserError("the last user message is empty")
    if len(text) > qa.settings.max_question_chars:
        raise UserError(f"the question is {len(text)} characters long; the limit is {qa.settings.max_question_chars}")
    extra = body.get("edgedistill") or {}
    if not isinstance(extra, dict):
        raise UserError("'edgedistill' must be an object, e.g. {\"answer_type\": \"choice\", \"options\": [...]}")
    answer_type = extra.get("answer_type") or qa.settings.answer_type
    if answer_type not in ANSWER_TYPES:
        raise UserError(f"edgedistill.answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
    options = extra.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise UserError("edgedistill.options must be a list of strings")
    return qa.question(text.strip(), answer_type, "\n".join(options))


def message_text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict)
                         and part.get("type") == "text")
    return ""


def max_tokens_of(body: dict, qa: QA) -> int:
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or qa.settings.max_new_tokens
    if not isinstance(asked, int) or asked < 1:
        raise UserError("max_tokens must be a positive integer")
    return min(asked, qa.settings.max_new_tokens)


def shown_text(raw: str, final: bool = False) -> str:
    """The completion as a reader sees it: annotations as their values; mid-stream, a trailing "<" held back."""
    text = readable(raw)
    return text if final or not text.endswith(OPEN) else text[:-1]


def summary(q: Question, raw: str, confidence: Confidence, supervisor_below: float) -> dict:
    answer, _, _ = split_stream(raw)
    return {"answer": chosen(q, readable(answer)), "answer_type": q.answer_type,
            "computations": computations(raw).removeprefix("Computation: "),
            "confidence": round(confidence.probability, 4) if confidence.samples else None,
            "band": band(confidence.probability, supervisor_below, confidence.likely_right_at) if confidence.samples else None,
            "agreeing": confidence.agreeing, "samples": confidence.samples,
            "calibrated": confidence.calibration is not None, "raw": raw}


class Completion:
    """One chat completion: the question asked of the scheduler, as OpenAI's chunks or as one reply."""

    def __init__(self, qa: QA, model: str, body: dict):
        self.qa, self.model = qa, model
        self.q = question_of(body, qa)
        self.max_tokens = max_tokens_of(body, qa)
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def _frame(self, obj: str, **fields) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, **fields}

    def chunks(self) -> Iterator[str]:
        """Server-sent events: the role, the text as it grows, then finish_reason and the `edgedistill` object."""
        asking = self.qa.ask(self.q, answer_only=False, max_new_tokens=self.max_tokens)
        try:
            yield self._event(delta={"role": "assistant", "content": ""})
            sent, raw = "", ""
            for raw, _ in asking.stream():
                now = shown_text(raw)
                if now.startswith(sent) and len(now) > len(sent):
                    yield self._event(delta={"content": now[len(sent):]})
                    sent = now
            rest = shown_text(raw, final=True).rstrip()
            if rest.startswith(sent) and len(rest) > len(sent):
                yield self._event(delta={"content": rest[len(sent):]})
            yield self._event(delta={}, finish_reason="stop", edgedistill=self._summary(asking, raw))
            yield "data: [DONE]\n\n"
        except UserError as exc:
            yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
        finally:   # the client left: its rows leave the batch
            asking.cancel()

    def _event(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return f"data: {json.dumps(self._frame('chat.completion.chunk', choices=[choice], **extra))}\n\n"

    def reply(self) -> dict:
        asking = self.qa.ask(self.q, answer_only=False, max_new_tokens=self.max_tokens)
        try:
            raw = ""
            for raw, _ in asking.stream():
                pass
            extra = self._summary(asking, raw)
        finally:
            asking.cancel()
        message = {"role": "assistant", "content": shown_text(raw, final=True).strip()}
        return self._frame("chat.completion", choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
                           edgedistill=extra)

    def _summary(self, asking, raw: str) -> dict:
        """The `edgedistill` object of a finished answer: waits for its confidence samples."""
        confidence = asking.confidence(extract_answer(raw, self.q.answer_type))
        return summary(self.q, raw.strip(), confidence, self.qa.settings.supervisor_below)


def error_body(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def authorized(header: str | None, auth: list[tuple[str, str]] | None) -> bool:
    """`Bearer USER:PASSWORD` against the app's credentials (compared in constant time); no auth: everyone."""
    if not auth:
        return True
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    user, _, password = token.strip().partition(":")
    return any(hmac.compare_digest(user, u) & hmac.compare_digest(password, p) for u, p in auth)


def add_openai_routes(api, qa: QA, model: str, auth: list[tuple[str, str]] | None) -> None:
    """/v1/models and /v1/chat/completions on the FastAPI app the page is mounted on."""

    def refused(request: Request) -> JSONResponse | None:
        if authorized(request.headers.get("authorization"), auth):
            return None
        return JSONResponse(error_body("give Authorization: Bearer USER:PASSWORD (the app's --auth credentials)",
                                       "authentication_error"), status_code=401)

    @api.get("/v1/models")
    def models(request: Request):
        return refused(request) or {"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "edgedistill"}]}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if (denied := refused(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(error_body("the body is not JSON"), status_code=400)
        try:
            if not isinstance(body, dict):
                raise UserError("the body must be a JSON object")
            completion = Completion(qa, model, body)
        except UserError as exc:
            return JSONResponse(error_body(str(exc)), status_code=400)
        if body.get("stream"):
            return StreamingResponse(completion.chunks(), media_type="text/event-stream")
        try:
            return await run_in_threadpool(completion.reply)
        except UserError as exc:
            return JSONResponse(error_body(str(exc), "server_error"), status_code=500)
