"""The app tries no connection off this machine, neither while starting nor while answering.

The workstation's network is closed, so an attempt would fail silently (or hang a request until a timeout) rather
than show up as traffic. Instead an audit hook, installed in the app's process by a sitecustomize.py on PYTHONPATH,
records every attempt Python makes: socket.connect, socket.sendto and name lookups (a DNS query is an attempt too).
"""
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request

from edgedistill.serve.process import serving

SMALL_GGUF = "smollm2-135m-instruct"     # the packaged SmolLM2-135M-Instruct GGUF: real answers, fast on llama.cpp
QUESTION = "A line makes 48 housings an hour. How many in 7.5 hours?"
# The untuned base model rarely ends its reasoning by itself, and 256 tokens of it take a minute on a busy 2-core
# machine; 64 are enough to show an answer and some reasoning.
SHORT_REPLIES = "serve:\n  max_new_tokens: 64\n"

# Settings a user's shell does not have: the app must keep itself offline without the test's help.
NOT_INHERITED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "GRADIO_ANALYTICS_ENABLED",
                 "DO_NOT_TRACK", "HF_HUB_DISABLE_TELEMETRY")

RECORDER = textwrap.dedent("""
    # Records each network attempt of this Python process (and of Python children, which inherit PYTHONPATH).
    import json, os, socket, sys, threading, traceback
    _LOG = os.environ["EDGEDISTILL_NET_LOG"]
    _LOCK = threading.Lock()

    def _write(row):
        with _LOCK, open(_LOG, "a") as f:
            f.write(json.dumps(row) + "\\n")

    def _record(event, args):
        if event in ("socket.connect", "socket.sendto"):
            sock, address = args[0], args[-1]
            family = "unix" if sock.family == socket.AF_UNIX else "inet"
            host = address[0] if family == "inet" else None
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
                       "socket.gethostbyaddr"):
            family, address, host = "lookup", args[0], args[0]
        else:
            return
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        try:
            _write({"event": event, "family": family, "host": host, "address": repr(address),
                    "stack": traceback.format_stack(limit=12)[:-1]})
        except Exception:   # an exception here would surface in the app's own socket call
            pass

    _write({"event": "recorder.started", "family": "none", "host": None, "address": repr(sys.argv), "stack": []})
    sys.addaudithook(_record)
""")


def short_replies(folder) -> str:
    """A config file (--config) that caps each reply at 64 new tokens."""
    (folder / "serve.yaml").write_text(SHORT_REPLIES)
    return str(folder / "serve.yaml")


def recording_env(folder, log) -> dict:
    """The test's environment minus the offline settings above, plus the recorder on PYTHONPATH."""
    (folder / "sitecustomize.py").write_text(RECORDER)
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env["EDGEDISTILL_NET_LOG"] = str(log)
    return env


def is_local(row: dict) -> bool:
    if row["family"] == "unix":
        return True
    host = row["host"]
    if host in (None, "", "localhost", "ip6-localhost"):
        return True     # None/"": a lookup for a local bind (getaddrinfo(None, port, AI_PASSIVE))
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False    # a host name other than localhost: a DNS lookup leaves the machine


def outbound(log) -> list[dict]:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [row for row in rows if not is_local(row)]


def describe(rows: list[dict]) -> str:
    return "\n\n".join(f"{r['event']} {r['address']}\n{''.join(r['stack'])}" for r in rows)


def test_recorder_sees_an_outbound_attempt(tmp_path):
    """Without this, an empty log could just mean the hook never ran."""
    log = tmp_path / "net.jsonl"
    probe = ("import socket\n"
             "s = socket.socket(); s.settimeout(0.2); s.connect_ex(('192.0.2.1', 9))\n"   # TEST-NET-1: unroutable
             "try: socket.getaddrinfo('example.invalid', 443)\n"
             "except OSError: pass\n")
    subprocess.run([sys.executable, "-c", probe], env=recording_env(tmp_path, log), check=True, timeout=60)
    assert sorted(r["address"] for r in outbound(log)) == ["'example.invalid'", "('192.0.2.1', 9)"]


def test_app_makes_no_outbound_attempt_at_start_or_while_answering(tmp_path):
    from gradio_client import Client
    log = tmp_path / "net.jsonl"
    with serving(SMALL_GGUF, "--config", short_replies(tmp_path), "--samples", "2",
                 "--feedback", str(tmp_path / "feedback.jsonl"), env=recording_env(tmp_path, log),
                 log_path=tmp_path / "app.log") as url:
        time.sleep(2)      # let start-up work that runs after the port opens (version checks, telemetry) happen
        started = outbound(log)
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        client = Client(url, verbose=False, analytics_enabled=False)
        answer, *_ = client.submit(QUESTION, False, api_name="/answer").result(timeout=300)
        assert answer.strip(), "the app gave no answer, so answering was not exercised"
        time.sleep(1)      # background work started by the request
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["event"] == "recorder.started" and "serve" in r["address"] for r in rows), "no recorder in the app"
    assert started == [], "outbound attempts at start:\n" + describe(started)
    assert outbound(log) == [], "outbound attempts while answering:\n" + describe(outbound(log))
