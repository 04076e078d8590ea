"""Fuzzing the running app's API (Hypothesis over request bodies and headers, against a real server with a stand-in
model): every request ends in 200 or a 4xx, never a 5xx; the server stays up; the feedback file stays loadable.

Profiles as tests/test_fuzz.py: `fast` in `make test`, `long` in `make fuzz-long` (EDGEDISTILL_FUZZ=long).
"""
from __future__ import annotations

import http.client
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgedistill.config import ServeConfig
from edgedistill.records import load_questions
from edgedistill.serve.process import free_port

from tests.test_fuzz import PROFILE  # noqa: F401  (registers and loads the fast/long profiles)
from tests.test_serve_api import ScriptModel, serve_in_thread

USER, PASSWORD = "ann", "pässwort"
GOOD_KEY = f"Bearer {USER}:{PASSWORD}".encode().decode("latin-1")     # as http.client sends it: UTF-8 bytes


def start(folder, auth) -> int:
    settings = ServeConfig(port=free_port(), samples=1, feedback=str(folder / "feedback.jsonl"), max_new_tokens=64)
    return serve_in_thread(settings, ScriptModel(), auth)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """With a login whose password is not ASCII (a non-ASCII header was a 500)."""
    folder = tmp_path_factory.mktemp("fuzz-api")
    return start(folder, [(USER, PASSWORD)]), folder


@pytest.fixture(scope="module")
def open_app(tmp_path_factory):
    """Without a login, as the probe found the feedback route: open to any local client."""
    folder = tmp_path_factory.mktemp("fuzz-api-open")
    return start(folder, None), folder


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    reply = connection.getresponse()
    reply.read()          # a stream to its end
    connection.close()
    return reply.status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)
content = st.one_of(st.text(max_size=300), json_values,
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"])},
                                                   optional={"text": json_values | st.text(max_size=80)}), max_size=3))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]) | json_values},
                                          optional={"content": content}), max_size=4)
chat_bodies = st.fixed_dictionaries({}, optional={
    "messages": messages | json_values, "stream": st.booleans() | json_values,
    "max_tokens": st.integers(-5, 5000) | json_values, "max_completion_tokens": st.integers(-5, 5000) | json_values,
    "model": st.text(max_size=20) | json_values, "temperature": json_values,
    "edgedistill": st.fixed_dictionaries({}, optional={
        "answer_type": st.sampled_from(["number", "choice", "label", "text", "exec"]) | json_values,
        "options": st.lists(st.text(max_size=30), max_size=70) | json_values}) | json_values})
bodies = st.one_of(chat_bodies.map(lambda b: json.dumps(b).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=200), st.just(b"[" * 5000 + b"]" * 5000))
latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=40)
headers = st.fixed_dictionaries({}, optional={
    "Content-Type": st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                     "multipart/form-data", "APPLICATION/JSON"]) | latin1,
    "Authorization": st.sampled_from([GOOD_KEY, "Bearer ann:wrong", "Basic x", "Bearer " + "é" * 30]) | latin1})


@given(body=bodies, sent=headers)
def test_fuzz_chat_completions_answer_200_or_4xx(app, body, sent):
    port, _ = app
    status = request(port, "POST", "/v1/chat/completions", body, sent)
    assert status < 500, (body[:200], sent, status)
    assert request(port, "GET", "/v1/models", headers={"Authorization": GOOD_KEY}) == 200     # still up


@given(data=st.lists(json_values | st.text(max_size=50), max_size=8))
def test_fuzz_feedback_route_keeps_the_file_loadable(open_app, data):
    port, folder = open_app
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/gradio_api/call/feedback", body=json.dumps({"data": data}),
                       headers={"Content-Type": "application/json"})
    reply = connection.getresponse()
    text = reply.read().decode(errors="replace")
    assert reply.status < 500, text
    if reply.status == 200:
        connection.request("GET", f"/gradio_api/call/feedback/{json.loads(text)['event_id']}")
        result = connection.getresponse().read().decode(errors="replace")
        assert " at 0x" not in result and "Traceback" not in result
    for name in ("feedback.jsonl", "feedback.unanswered.jsonl"):
        if (folder / name).exists():
            load_questions(folder / name, need_answers=False)
