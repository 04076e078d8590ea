"""The OpenAI-compatible HTTP backend, against a real server: llama-cpp-python's own server, on 127.0.0.1,
serving the packaged SmolLM2 GGUF. Also: a server that is down, one that answers garbage, one that dies mid-run."""
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from edgedistill import UserError
from edgedistill.calculator import check_annotations
from edgedistill.formats import answer_first_target, chat
from edgedistill.generation import Sampling, load_generator
from edgedistill.generation.continuation import first_wrong_fill
from edgedistill.generation.openai_api import OpenAIGenerator
from edgedistill.models import resolve
from edgedistill.records import load_questions


def test_first_wrong_fill_finds_the_first_annotation_the_calculator_disagrees_with():
    assert first_wrong_fill("Answer: <<2*3=6>>\nReason: <<6+1=7>>.") is None
    text = "Answer: <<2*3=7>>\nReason: <<7+1=8>>."
    assert first_wrong_fill(text) == (len("Answer: <<2*3="), "6>>")
    assert first_wrong_fill("Answer: <<2*3=6>> and <<10/4=") == (len("Answer: <<2*3=6>> and <<10/4="), "2.5>>")
    assert first_wrong_fill("<<x+1=5>> then <<2*2=5>>") == (len("<<x+1=5>> then <<2*2="), "4>>")   # invalid one left
    assert first_wrong_fill("Answer: <<2*3") is None and first_wrong_fill("no arithmetic") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    gguf = str(resolve("smollm2-135m-instruct").path)
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited at start")
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not start in 120 s")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_server(port)
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    proc.wait()


def test_http_backend_answers_and_every_annotation_is_the_calculators(server):
    generator = load_generator(server)    # chat template: from the GGUF path the server reports as its model id
    assert generator.backend == "openai" and generator.model.endswith(".gguf")
    questions = load_questions("shopfloor:heldout", limit=6)
    shots = [(q, answer_first_target(q)) for q in load_questions("shopfloor:train", limit=2)]
    texts = generator.generate([chat(q, shots) for q in questions], Sampling(max_new_tokens=80,
                                                                             stop_after_answer=False))
    assert len(texts) == 6 and all(t.startswith("Answer:") for t in texts), texts
    assert sum(t.count("<<") for t in texts) >= 6
    for text in texts:   # a 135M model cannot multiply; the verify-and-continue loop made every value right
        assert check_annotations(text) == [], text
    again = generator.generate([chat(q, shots) for q in questions], Sampling(max_new_tokens=80,
                                                                             stop_after_answer=False))
    assert again == texts                 # greedy and seeded: the same samples on a rerun


def test_server_that_is_down_is_a_clear_error_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    generator = OpenAIGenerator(url, render=lambda m: m[-1]["content"], model="x", retries=2, backoff=0.01)
    started = time.time()
    with pytest.raises(UserError, match=r"no answer from .* after 3 tries .*is the server running"):
        generator.generate([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=4))
    assert time.time() - started < 10


def test_server_that_answers_garbage_is_a_clear_error():
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>not an API</html>")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        generator = OpenAIGenerator(f"http://127.0.0.1:{httpd.server_port}/v1", render=lambda m: "q", model="x")
        with pytest.raises(UserError, match="not an OpenAI completion"):
            generator.generate([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=4))
    finally:
        httpd.shutdown()


def test_each_sample_sends_its_own_seed_and_is_continued_after_the_calculators_value():
    """A scripted server that always gets 2*3 wrong: every sample is cut after `=`, gets `6>>` and is continued with
    its own seed (seed + index) and what is left of its token budget; `complete` takes the seed from Sampling."""
    requests = []

    class Scripted(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(payload)
            text = "Answer: <<2*3=7>>\nReason: seven." if payload["prompt"].endswith("?") else "\nReason: six."
            body = json.dumps({"choices": [{"text": text}], "usage": {"completion_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        generator = OpenAIGenerator(f"http://127.0.0.1:{httpd.server_port}/v1", render=lambda m: m[-1]["content"],
                                    model="x")
        sampling = Sampling(max_new_tokens=40, stop_after_answer=False, seed=7)
        texts = generator.generate([[{"role": "user", "content": q}] for q in ("a?", "b?")], sampling)
        assert texts == ["Answer: <<2*3=6>>\nReason: six."] * 2
        sent = sorted((r["prompt"], r["seed"], r["max_tokens"]) for r in requests)
        assert sent == [("a?", 7, 40), ("a?Answer: <<2*3=6>>", 7, 35), ("b?", 8, 40), ("b?Answer: <<2*3=6>>", 8, 35)]
        assert generator.generated_tokens == 20
        requests.clear()
        assert generator.complete("c?", Sampling(max_new_tokens=40, seed=3)) == "Answer: <<2*3=6>>"
        assert [r["seed"] for r in requests] == [3]     # the fill completed the Answer line: nothing to continue
    finally:
        httpd.shutdown()


def test_teacher_on_a_server_that_dies_mid_run_loses_nothing_and_resumes(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    questions = [{"id": f"q{i}", "question": f"A press makes {10 + i} parts an hour. How many in {i + 2} hours?",
                  "answer": str((10 + i) * (i + 2))} for i in range(8)]
    data = tmp_path / "seeds.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"train": str(data), "eval": str(data), "train_limit": None},
        "teacher": {"kind": "model", "model": url, "template": "smollm2-135m-instruct", "samples": 2,
                    "batch_size": 1, "max_new_tokens": 40, "self_correct": False}}))
    out = tmp_path / "run"
    samples = out / "teacher" / "samples.jsonl"
    command = [sys.executable, "-m", "edgedistill.cli", "teach", "--config", str(config), "--out", str(out)]
    server = start_server(port)
    teach = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (samples.exists() and len(samples.read_text().splitlines()) >= 4) and time.time() < deadline:
        time.sleep(0.05)
    server.kill()                                            # the server dies mid-run
    server.wait()
    _, stderr = teach.communicate(timeout=300)
    assert teach.returncode == 2 and "is the server running" in stderr, stderr[-2000:]
    before = samples.read_text().splitlines()
    assert 4 <= len(before) < 16 and all(json.loads(line) for line in before)   # whole records only
    server = start_server(port)
    try:
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        server.kill()
        server.wait()
    assert "teacher: resuming" in rerun.stdout, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    after = samples.read_text().splitlines()
    assert after[:len(before)] == before
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == len(set(ids)) == 16                   # none regenerated, none missing
