"""The app: answers through its API (gradio_client), shows answer/computation/reasoning/confidence, binds 127.0.0.1."""
import socket
import subprocess
import sys
import time

import pytest

from serve.app import Reply, ask, confidence_text


class ScriptedGenerator:
    """Stands in for a model: greedy returns a full answer, samples return answers from a list."""
    backend = "scripted"

    def __init__(self, sampled):
        self.sampled = sampled

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        if sampling.temperature == 0:
            return ["Answer: <<48*7.5=360>>\nReason: 48 an hour for 7.5 hours: <<48*7.5=360>> housings."]
        return [f"Answer: <<{a}=>>" if a != "x" else "no idea" for a in self.sampled][:len(conversations)]


def test_ask_splits_answer_computation_reasoning_and_measures_agreement():
    reply = ask(ScriptedGenerator(["48*7.5", "48*7.5", "360", "48*8", "x"]), "How many?", samples=5)
    assert reply.answer == "360"
    assert reply.computation == "48*7.5 = 360"
    assert reply.rationale.startswith("48 an hour")
    assert reply.agreement == 3 and reply.samples == 5
    assert confidence_text(reply).startswith("3 of 5 samples agree (medium)")
    assert "384 (1)" in confidence_text(reply)


def test_confidence_levels():
    assert "(high)" in confidence_text(Reply("1", "", "", 5, 5, ["1"] * 5))
    assert "low" in confidence_text(Reply("1", "", "", 1, 5, ["1", "2", "2", "2", "3"]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tiny_model_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgedistill.cli", "serve", "--model", str(tiny_model_dir),
                             "--port", str(port), "--samples", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.5)
    yield port, proc
    proc.terminate()
    proc.wait(timeout=30)


def test_app_answers_through_api_and_binds_loopback_only(running_app):
    from gradio_client import Client
    port, proc = running_app
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    answer, computation, rationale, confidence = client.predict("What is 6 times 7?", api_name="/answer")
    assert answer.startswith("## ") and "samples agree" in confidence
    assert listening_addresses(port) == {"127.0.0.1"}


def listening_addresses(port):
    """Local addresses with a socket in LISTEN state on `port`, read from /proc/net/tcp{,6} (no tools needed)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = [bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found
