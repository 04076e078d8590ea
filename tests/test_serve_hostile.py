"""A hostile client against the running app and its API (issue 32's probe, each finding a test that failed before
its fix): malformed requests get 400 with one line, never 500; OpenAI's field types are enforced; the feedback
route writes no row the next round would refuse; uploads are off; nothing of the server's paths or objects leaks;
a client that leaves a non-streamed request stops its decode."""
import http.client
import json
import socket
import time
import urllib.parse

import pytest

from edgedistill import UserError
from edgedistill.config import ServeConfig
from edgedistill.records import load_questions
from edgedistill.serve.api import authorized
from edgedistill.serve.feedback import FeedbackLog
from edgedistill.serve.process import free_port

from tests.test_serve import CharModel
from tests.test_serve_api import serve_in_thread

SCRIPT = "Answer: <<48*7.5=360>>\nReason: " + "forty-eight an hour for seven and a half hours. " * 8
CONTEXT = 1500       # the stand-in model's context, in its tokens (one a character)


class SlowModel(CharModel):
    """Writes SCRIPT at 100 characters a second and counts what it decoded; a prompt longer than CONTEXT does not
    fit, as on llama.cpp."""

    def __init__(self):
        super().__init__(SCRIPT)
        self.decoded = 0

    def prompt_ids(self, messages):
        return [1] * len(messages[-1]["content"])

    def check_fits(self, prompt, max_new_tokens, what="the prompt"):
        if len(prompt) + max_new_tokens > CONTEXT:
            raise UserError(f"{what} has {len(prompt)} tokens; it exceeds the {CONTEXT}-token context")

    def single_row(self, ids, max_new_tokens=0):
        logits, feed = super().single_row(ids, max_new_tokens)

        def slow_feed(token):
            time.sleep(0.01)
            self.decoded += 1
            return feed(token)
        return logits, slow_feed

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        return ["Answer: <<48*7.5=360>>"] * len(conversations)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The page and the API in a thread, no login (the probe's unauthenticated server); (host, port, model, folder)."""
    folder = tmp_path_factory.mktemp("hostile")
    model = SlowModel()
    port = serve_in_thread(ServeConfig(port=free_port(), samples=1, feedback=str(folder / "feedback.jsonl")), model,
                           name="slow-model")
    return "127.0.0.1", port, model, folder


def post(app, path: str, body: bytes | str, content_type: str | None = "application/json",
         headers: dict | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection(app[0], app[1], timeout=60)
    sent = {"Content-Type": content_type} if content_type else {}
    connection.request("POST", path, body=body.encode() if isinstance(body, str) else body,
                       headers={**sent, **(headers or {})})
    reply = connection.getresponse()
    return reply.status, reply.read().decode(errors="replace")


def chat(app, body) -> tuple[int, str]:
    return post(app, "/v1/chat/completions", json.dumps(body) if not isinstance(body, (str, bytes)) else body)


ASK = [{"role": "user", "content": "How many housings in a 7.5-hour shift at 48 an hour?"}]


@pytest.mark.parametrize("body, reason", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "'text', a string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "'text', a string"),
    ({"messages": [{"role": "user", "content": 12}]}, "a string or a list of content parts"),
    ({"messages": [{"role": 5, "content": "x"}]}, "string 'role'"),
    ({"messages": ASK, "max_tokens": 0}, "positive integer"),
    ({"messages": ASK, "max_tokens": True}, "positive integer"),
    ({"messages": ASK, "max_completion_tokens": -3}, "positive integer"),
    ({"messages": ASK, "stream": "false"}, "true or false"),
    ({"messages": ASK, "model": ["a"]}, "'model' must be a string"),
    ({"messages": [{"role": "user", "content": "x" * 1900}]}, "exceeds the 1500-token context"),
    ({"messages": ASK, "edgedistill": {"answer_type": "choice", "options": ["o"] * 65}}, "at most 64"),
    (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
])
def test_a_malformed_request_gets_400_with_one_line(app, body, reason):
    status, text = chat(app, body)
    assert status == 400, text
    message = json.loads(text)["error"]["message"]
    assert reason in message and "\n" not in message and "Traceback" not in text


def test_only_json_bodies_start_a_decode(app):
    """A page on another site can POST text/plain without asking first (no CORS preflight): refused unread."""
    before = app[2].decoded
    status, text = post(app, "/v1/chat/completions", json.dumps({"messages": ASK}), content_type="text/plain")
    assert status == 415 and "application/json" in text
    assert post(app, "/v1/chat/completions", json.dumps({"messages": ASK}), content_type=None)[0] == 415
    assert app[2].decoded == before


def test_a_body_over_the_limit_is_refused(app):
    status, text = chat(app, json.dumps({"messages": ASK, "pad": "x" * (2 << 20)}))
    assert status == 413 and "at most" in json.loads(text)["error"]["message"]      # as the page's routes answer


def test_a_well_formed_request_still_answers(app):
    status, text = chat(app, {"messages": ASK, "stream": False, "max_tokens": 24})
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"].startswith("Answer: 360")


def test_a_client_that_leaves_a_reply_not_streamed_stops_its_decode(app):
    model = app[2]
    with socket.create_connection(app[:2]) as raw:
        body = json.dumps({"messages": ASK, "max_tokens": 256}).encode()
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.6)           # the decode has started: about 60 of its ~420 characters
    started = model.decoded
    time.sleep(1.5)
    stopped = model.decoded
    time.sleep(1.0)
    assert model.decoded == stopped, "still decoding after its client left"
    assert stopped - started < 100, "it decoded on after the client left"
    assert chat(app, {"messages": ASK, "max_tokens": 24})[0] == 200      # and the next question is answered


def test_uploads_are_off(app, tmp_path):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n")
    for path in ("/gradio_api/upload", "/upload", "/gradio_api/upload/"):
        status, _ = post(app, path, body, content_type=f"multipart/form-data; boundary={boundary}")
        assert status == 404, path


def test_a_page_route_refuses_a_body_over_its_limit(app):
    """Gradio keeps a queued call's inputs until its result is fetched: 2 MB posted and never fetched stayed in
    memory (benchmarks/api_hostile_memory.py). Refused before Gradio reads it; a small call still goes through."""
    huge = json.dumps({"data": ["Q?", "A", "up", "", "number", ["o" * 1000] * 2000]})
    assert post(app, "/gradio_api/call/feedback", huge)[0] == 413
    assert post(app, "/gradio_api/call/feedback", json.dumps({"data": []}))[0] in (200, 422)


def test_a_raw_gradio_call_with_too_few_inputs_tells_no_object_description(app):
    status, text = post(app, "/gradio_api/call/feedback", json.dumps({"data": []}))
    if status == 200:
        event = json.loads(text)["event_id"]
        connection = http.client.HTTPConnection(*app[:2], timeout=60)
        connection.request("GET", f"/gradio_api/call/feedback/{urllib.parse.quote(event)}")
        text = connection.getresponse().read().decode(errors="replace")
    assert " at 0x" not in text and "object at" not in text and "Traceback" not in text


def test_the_feedback_route_keeps_the_file_loadable_and_tells_no_path(app):
    """Through Gradio's own route, as the probe posted it: an answer type no loader takes, 2,000 long options, a
    string as options. None is written; what is written loads."""
    folder = app[3]
    hostile = [["Which?", "A", "up", "", "exec", ["A. x", "B. y"]],
               ["Which?", "A", "up", "", "choice", ["o" * 1000] * 65],    # 2,000 of them: 413 (the test above)
               ["Which?", "A", "up", "", "choice", "AB"],
               ["Which?", 7, "up", "", "number", []],
               ["How many?", "360", "up", "", "number", []]]
    replies = []
    for data in hostile:
        status, text = post(app, "/gradio_api/call/feedback", json.dumps({"data": data}))
        assert status == 200, text
        connection = http.client.HTTPConnection(*app[:2], timeout=60)
        connection.request("GET", f"/gradio_api/call/feedback/{json.loads(text)['event_id']}")
        replies.append(connection.getresponse().read().decode(errors="replace"))
    assert all("Nothing was saved" in reply for reply in replies[:4]), replies
    assert "saved to `feedback.jsonl`" in replies[4] and str(folder) not in replies[4]
    rows = load_questions(folder / "feedback.jsonl")
    assert [(q.question, q.answer) for q in rows] == [("How many?", "360")]


def test_feedback_fields_are_checked_as_the_loader_checks_them(tmp_path):
    log = FeedbackLog(tmp_path / "f.jsonl", "m", "number")
    assert "answer type must be one of" in log.record("Q?", "1", "up", answer_type="exec")
    assert "options must be a list of strings" in log.record("Q?", "A", "up", answer_type="choice", options="AB")
    assert "at most 64" in log.record("Q?", "A", "up", answer_type="choice", options=["x"] * 65)
    assert "longer than 300" in log.record("Q?", "A", "up", answer_type="choice", options=["x" * 301, "y"])
    assert "must be text" in log.record("Q?", ["1"], "up")
    assert not (tmp_path / "f.jsonl").exists() or not (tmp_path / "f.jsonl").read_text().strip()
    assert log.record("Q?", "A", "up", answer_type="choice", options=["A. x", "B. y"]).startswith("Thanks: saved to `f.jsonl`")
    assert load_questions(tmp_path / "f.jsonl")[0].options == ["A. x", "B. y"]


def test_credentials_are_compared_as_bytes():
    """Starlette hands headers over as latin-1 text; a UTF-8 password arrives as its bytes read that way."""
    on_the_wire = "Bearer ann:" + "pässwort".encode().decode("latin-1")
    assert authorized(on_the_wire, [("ann", "pässwort")])
    assert not authorized("Bearer ann:" + "päss".encode().decode("latin-1"), [("ann", "pässwort")])
    assert not authorized("Bearer ann:ä€", [("ann", "s3cret")])           # was TypeError: HTTP 500
    assert not authorized("Bearer \udcff:x", [("ann", "s3cret")])
