"""The app's OpenAI-compatible endpoint, through the real `openai` client package and curl: the calculator fills
its value while decoding, the confidence comes in an `edgedistill` object, and the app's credentials guard it."""
import json
import socket
import subprocess
import threading
import time

import pytest

from edgedistill.config import ServeConfig
from edgedistill.serve.api import authorized, shown_text
from edgedistill.serve.server import serve
from edgedistill.serve.process import free_port

from tests.test_serve import CharModel

# What the stand-in model writes: its own value after `=` is wrong (999); the calculator's (360) must replace it.
SCRIPT = "Answer: <<48*7.5=999>>\nReason: 48 an hour for 7.5 hours."
USER, PASSWORD = "ann", "s3cret"


class ScriptModel(CharModel):
    """Writes SCRIPT through the real decoding loop (the calculator forces its value, so the tokens it feeds replace
    the model's own); its samples are answer lines."""

    def __init__(self):
        super().__init__(SCRIPT)

    def render(self, messages):
        return messages[-1]["content"]

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        return ["Answer: <<48*7.5=360>>", "Answer: 384"][:len(conversations)]


def serve_in_thread(settings: ServeConfig, model, auth=None, name: str = "scripted-model") -> int:
    """The app (page and API) in a daemon thread of this process, on settings.port, with `model` as its loaded
    generator; returns the port once it accepts connections."""
    thread = threading.Thread(target=serve, args=(name, settings, auth), kwargs={"load": lambda *a, **k: model},
                              daemon=True)
    thread.start()
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", settings.port), timeout=1).close()
            return settings.port
        except OSError:
            assert thread.is_alive() and time.time() < deadline, "the app did not start"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    """The app (page and API) in a thread of this process, with the stand-in model and a login."""
    folder = tmp_path_factory.mktemp("api")
    settings = ServeConfig(port=free_port(), samples=2, feedback=str(folder / "feedback.jsonl"))
    port = serve_in_thread(settings, ScriptModel(), [(USER, PASSWORD)])
    return f"http://127.0.0.1:{port}/v1"


def client(url, key=f"{USER}:{PASSWORD}"):
    from openai import OpenAI
    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def test_openai_client_streams_the_answer_with_the_calculators_value(api_url):
    chunks = list(client(api_url).chat.completions.create(
        model="scripted-model", stream=True, messages=[{"role": "user", "content": "48 an hour; a 7.5-hour shift?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Answer: 360\nReason: 48 an hour for 7.5 hours."        # the calculator's value, not the model's
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5     # streamed, not one piece
    assert not any("<" in (c.choices[0].delta.content or "") for c in chunks if c.choices)   # no half annotation
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    extra = final.model_extra["edgedistill"]
    assert extra["answer"] == "360" and extra["computations"] == "`48*7.5 = 360`"
    assert (extra["agreeing"], extra["samples"], extra["confidence"]) == (1, 2, 0.5)   # 360 and 384 sampled
    assert extra["raw"] == "Answer: <<48*7.5=360>>\nReason: 48 an hour for 7.5 hours."


def test_a_reply_not_streamed_and_the_model_list(api_url):
    api = client(api_url)
    reply = api.chat.completions.create(model="any", messages=[
        {"role": "system", "content": "ignored"}, {"role": "user", "content": [{"type": "text", "text": "How many?"}]}])
    assert reply.choices[0].message.content == "Answer: 360\nReason: 48 an hour for 7.5 hours."
    assert reply.model_extra["edgedistill"]["band"] == "unsure: check with a supervisor"
    assert [m.id for m in api.models.list().data] == ["scripted-model"]


def test_curl_streams_server_sent_events(api_url):
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "How many?"}]})
    out = subprocess.run(["curl", "-sN", "--max-time", "60", "-H", f"Authorization: Bearer {USER}:{PASSWORD}",
                          "-H", "Content-Type: application/json", "-d", body, f"{api_url}/chat/completions"],
                         capture_output=True, text=True, timeout=90).stdout
    events = [line[len("data: "):] for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text.startswith("Answer: 360\n")


def test_the_api_needs_the_apps_credentials_and_says_what_is_wrong(api_url):
    import openai
    with pytest.raises(openai.AuthenticationError, match="Bearer USER:PASSWORD"):
        client(api_url, key="ann:wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(api_url, key="nobody").chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="role 'user'"):
        client(api_url).chat.completions.create(model="m", messages=[{"role": "system", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="answer_type must be one of"):
        client(api_url).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                extra_body={"edgedistill": {"answer_type": "poem"}})
    with pytest.raises(openai.BadRequestError, match="limit is 2000"):
        client(api_url).chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 2001}])


def test_bearer_check_and_held_back_annotation():
    assert authorized(None, None) and authorized("Bearer a:b", [("a", "b")])
    assert not authorized("Bearer a:bb", [("a", "b")]) and not authorized("Basic a:b", [("a", "b")])
    assert not authorized(None, [("a", "b")]) and authorized("bearer  a:b:c", [("a", "b:c")])
    assert shown_text("Answer: <") == "Answer: " and shown_text("Answer: <", final=True) == "Answer: <"
    assert shown_text("Answer: <<48*7.") == "Answer: " and shown_text("Answer: <<48*7.5=360>>") == "Answer: 360"
