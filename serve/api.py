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
  it, its computations, the queries with the rows they read (`tables`), the confidence with its band, and the raw
  completion.
- Started with --tables, every question carries the tables' schema: a plain chat message, no mode to pick; the
  student writes a query when the question needs the tables, and its rows are filled in while it decodes.
- The same loopback default as the page. With --auth/--auth-file a request needs `Authorization: Bearer
  USER:PASSWORD` (the openai package's `api_key="USER:PASSWORD"`); answers 401 otherwise.
The question is decoded by the same scheduler as the page's, so page and API users share one batch.

A malformed request is answered 400 with one line saying what to fix, never 500: a body that is not JSON (or not
sent as `application/json`, 415: a web page cannot post that to another site without asking first), nested past
the parser's depth, fields of the wrong type (checked as OpenAI checks them: `stream` a boolean, `max_tokens` a positive
integer, not `true`), a question longer than the model's context. A body over MAX_BODY_BYTES is answered 413, as
the page's routes answer theirs (server.guarded_site); it is read no further than that. A client that goes away stops its decode, streamed
or not.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgedistill import UserError
from edgedistill.checkers import extract_answer
from edgedistill.records import ANSWER_TYPES, Question
from edgedistill.formats import computations, readable, split_stream
from edgedistill.serve.answering import QA, Confidence, band, chosen

OPEN = ("<", "[")   # a trailing "<" or "[" may start an annotation: held back until the next token says
MAX_BODY_BYTES = 1 << 20   # a question is at most serve.max_question_chars; the rest of a body is small
MAX_MESSAGES = 256


@dataclass(frozen=True)
class ChatRequest:
    """What edgedistill reads of a chat-completions body, each field checked."""
    question: Question
    max_tokens: int
    stream: bool


def parse_request(body, qa: QA) -> ChatRequest:
    """The request a chat-completions body makes; UserError says what is wrong (answered 400)."""
    if not isinstance(body, dict):
        raise UserError("the body must be a JSON object")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise UserError(f"'stream' must be true or false, got {json.dumps(stream)[:40]}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError("'model' must be a string")
    return ChatRequest(question_of(body, qa), max_tokens_of(body, qa), bool(stream))


def question_of(body: dict, qa: QA) -> Question:
    """The question a chat-completions body asks, as the page would ask it; UserError says what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError("'messages' must be a non-empty list of {role, content}")
    if len(messages) > MAX_MESSAGES:
        raise UserError(f"'messages' has {len(messages)} messages; at most {MAX_MESSAGES} are read")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise UserError("every message must be an object with a string 'role'")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise UserError("no message with role 'user': the question is the last user message")
    text = message_text(users[-1].get("content"))
    if not text.strip():
        raise UserError("the last user message is empty")
    if len(text) > qa.settings.max_question_chars:
        raise UserError(f"the question is {len(text)} characters long; the limit is {qa.settings.max_question_chars}")
    extra = body.get("edgedistill")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise UserError("'edgedistill' must be an object, e.g. {\"answer_type\": \"choice\", \"options\": [...]}")
    answer_type = extra.get("answer_type") or qa.settings.answer_type
    if answer_type not in ANSWER_TYPES:
        raise UserError(f"edgedistill.answer_type must be one of {ANSWER_TYPES}, got {str(answer_type)[:40]!r}")
    options = extra.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise UserError("edgedistill.options must be a list of strings")
    return qa.question(text.strip(), answer_type, "\n".join(options))


def message_text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts (each {"type": "text", "text": str},
    as OpenAI's; other kinds of part are skipped)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise UserError("a message's 'content' must be a string or a list of content parts")
    texts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise UserError("each content part must be an object with a string 'type'")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise UserError("a text content part needs 'text', a string")
            texts.append(part["text"])
    return "\n".join(texts)


def max_tokens_of(body: dict, qa: QA) -> int:
    """max_completion_tokens (OpenAI's current name), else max_tokens, else the app's; capped at the app's."""
    asked = next((body[name] for name in ("max_completion_tokens", "max_tokens") if body.get(name) is not None),
                 qa.settings.max_new_tokens)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise UserError(f"max_tokens must be a positive integer, got {json.dumps(asked)[:40]}")
    return min(asked, qa.settings.max_new_tokens)


def read_json(raw: bytes):
    """The body as JSON, or UserError (nested past the parser's recursion limit counts as not JSON)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):    # UnicodeDecodeError is a ValueError
        raise UserError("the body is not UTF-8 JSON, or nests deeper than JSON parsers follow") from None


def shown_text(raw: str, final: bool = False) -> str:
    """The completion as a reader sees it: annotations as their values; mid-stream, a trailing "<" or "[" (half of
    an annotation's opening) held back."""
    text = readable(raw)
    return text if final or not text.endswith(OPEN) else text[:-1]


def summary(q: Question, raw: str, confidence: Confidence, supervisor_below: float, calls=()) -> dict:
    """The `edgedistill` object: the answer, its computations, the queries with the rows they read (`tables`, with
    --tables), the confidence and the raw completion."""
    answer, _, _ = split_stream(raw)
    tables = [{"query": done.query, "columns": list(done.result.columns) if done.result else [], "rows": done.cells,
               "truncated": bool(done.result and done.result.truncated), "error": done.error} for done in calls]
    return {"answer": chosen(q, readable(answer)), "answer_type": q.answer_type, "tables": tables,
            "computations": computations(raw).removeprefix("Computation: "),
            "confidence": round(confidence.probability, 4) if confidence.samples else None,
            "band": band(confidence.probability, supervisor_below, confidence.likely_right_at) if confidence.samples else None,
            "agreeing": confidence.agreeing, "samples": confidence.samples,
            "calibrated": confidence.calibration is not None, "raw": raw}


class Completion:
    """One chat completion: the question asked of the scheduler, as OpenAI's chunks or as one reply. `start()`
    submits it (a question too long for the context is refused there, before any reply is sent)."""

    def __init__(self, qa: QA, model: str, request: ChatRequest):
        self.qa, self.model, self.request = qa, model, request
        self.q = request.question
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        self.asking = None

    def start(self) -> None:
        self.asking = self.qa.ask(self.q, answer_only=False, max_new_tokens=self.request.max_tokens)

    def cancel(self) -> None:
        """The client left: its rows leave the batch."""
        if self.asking is not None:
            self.asking.cancel()

    def _frame(self, obj: str, **fields) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, **fields}

    def chunks(self) -> Iterator[str]:
        """Server-sent events: the role, the text as it grows, then finish_reason and the `edgedistill` object."""
        asking = self.asking
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
        asking = self.asking
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
        asked = asking.answered_as      # a query on the Answer line: compared by the rows it returned
        confidence = asking.confidence(extract_answer(raw, asked.answer_type))
        return summary(asked, raw.strip(), confidence, self.qa.settings.supervisor_below, self.qa.tool_calls(raw))


def error_body(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def authorized(header: str | None, auth: list[tuple[str, str]] | None) -> bool:
    """`Bearer USER:PASSWORD` against the app's credentials, compared as bytes in constant time (comparing text
    refuses non-ASCII); no auth: everyone. A header arrives as latin-1 text, so its bytes are those of a UTF-8
    password, which is what the credentials are compared as."""
    if not auth:
        return True
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    user, _, password = (wire_bytes(part) for part in token.strip().partition(":"))
    return any(hmac.compare_digest(user, u.encode()) & hmac.compare_digest(password, p.encode()) for u, p in auth)


def wire_bytes(text: str) -> bytes:
    """The bytes a header's text was decoded from (latin-1, as HTTP servers decode headers)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


JSON_TYPES = ("application/json",)


async def body_of(request: Request) -> bytes:
    """The body, read no further than MAX_BODY_BYTES + 1 (a client that sends more is refused, not buffered)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)


async def until_disconnected(request: Request, completion: Completion) -> None:
    """Cancels `completion` once its client has gone (a reply not streamed has no write to fail on). The body is
    read by now, so the next message the server passes on is the disconnect: waited for, not polled (Starlette's
    StreamingResponse listens the same way)."""
    while (await request.receive()).get("type") != "http.disconnect":
        pass
    completion.cancel()


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
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in JSON_TYPES:
            return JSONResponse(error_body(f"send the body as Content-Type: application/json (got "
                                           f"{kind[:60] or 'none'!r})"), status_code=415)
        raw = await body_of(request)
        if len(raw) > MAX_BODY_BYTES:
            return JSONResponse(error_body(f"the body is over {MAX_BODY_BYTES} bytes; a chat request needs at most "
                                           f"{MAX_BODY_BYTES}"), status_code=413)
        try:
            completion = Completion(qa, model, parse_request(read_json(raw), qa))
            await run_in_threadpool(completion.start)
        except UserError as exc:
            return JSONResponse(error_body(str(exc)), status_code=400)
        if completion.request.stream:
            return StreamingResponse(completion.chunks(), media_type="text/event-stream")
        watcher = asyncio.ensure_future(until_disconnected(request, completion))
        try:
            return await run_in_threadpool(completion.reply)
        except UserError as exc:
            return JSONResponse(error_body(str(exc), "server_error"), status_code=500)
        finally:
            watcher.cancel()
