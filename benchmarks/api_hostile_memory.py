"""The app's memory under hostile traffic: RSS of a real `edgedistill serve` (the packaged SmolLM2-135M GGUF, no
login, as the probe found it) after a warm-up, and after 2,000 mixed hostile requests. Issue 32's bar: within 5%.

    .venv/bin/python benchmarks/api_hostile_memory.py [--requests 2000] [--warmup 200] [--model smollm2-135m-instruct]

The mix, in turn: malformed bodies (deep nesting, wrong types, not UTF-8, over 1 MiB), text/plain posts, bad and
non-ASCII Authorization headers, uploads, feedback rows with fields no loader takes, streamed requests abandoned
after their first bytes, and a well-formed question of 8 tokens every tenth request.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedistill.serve.process import serving

ASK = [{"role": "user", "content": "A pallet holds 24 boxes of 36 bolts. How many bolts on 5 pallets?"}]
JSON = {"Content-Type": "application/json"}


def hostile_requests():
    """(method, path, body bytes, headers), one kind after another, forever."""
    chat = "/v1/chat/completions"
    kinds = [
        ("POST", chat, b"[" * 100_000 + b"]" * 100_000, JSON),
        ("POST", chat, json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": ASK, "max_tokens": 0}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": ASK, "stream": "false"}).encode(), JSON),
        ("POST", chat, b"\xff\xfe\xfd", JSON),
        ("POST", chat, json.dumps({"messages": ASK}).encode(), {"Content-Type": "text/plain"}),
        ("POST", chat, json.dumps({"messages": ASK, "pad": "x" * (1 << 20)}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": [{"role": "user", "content": "x" * 1999}]}).encode(), JSON),
        ("GET", "/v1/models", b"", {"Authorization": "Bearer " + "é" * 40}),
        ("POST", "/gradio_api/upload", b"--b\r\n\r\nhello\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}),
        ("POST", "/gradio_api/call/feedback", json.dumps({"data": ["Q?", "A", "up", "", "exec", ["o" * 1000] * 2000]}).encode(), JSON),
        ("POST", "/gradio_api/call/feedback", json.dumps({"data": []}).encode(), JSON),
        ("STREAM", chat, json.dumps({"messages": ASK, "stream": True, "max_tokens": 32}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": ASK, "edgedistill": {"answer_type": "choice", "options": ["o"] * 65}}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": ASK, "model": ["x"], "temperature": "hot"}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": "not a list"}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": [{"role": 5}]}).encode(), JSON),
        ("POST", chat, b'{"messages": [', JSON),
        ("POST", chat, json.dumps({"messages": ASK, "max_tokens": True}).encode(), JSON),
        ("POST", chat, json.dumps({"messages": ASK, "max_tokens": 8}).encode(), JSON),     # well-formed
    ]
    while True:
        yield from kinds


def send(host: str, port: int, method: str, path: str, body: bytes, headers: dict) -> int:
    if method == "STREAM":      # the first bytes of a stream, then gone
        with socket.create_connection((host, port), timeout=60) as raw:
            raw.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            raw.recv(64)
        return 0
    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        reply = connection.getresponse()
        reply.read()
        return reply.status
    except (ConnectionError, http.client.HTTPException):   # the server may close on an oversized body
        return -1
    finally:
        connection.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and str(port).encode() in argv:
                return int(entry.name)
    raise RuntimeError(f"no server process on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--out", default="runs/api_hostile_memory.json")
    args = parser.parse_args()
    with serving(args.model, "--samples", "2", "--feedback", "runs/api_hostile_feedback.jsonl",
                 log_path="runs/api_hostile_memory.log") as url:
        address = urlparse(url)
        pid = server_pid(address.port)
        requests = hostile_requests()
        statuses: dict[int, int] = {}
        started = time.time()
        for n in range(args.warmup + args.requests):
            if n == args.warmup:
                before = rss_mb(pid)
            status = send(address.hostname, address.port, *next(requests))
            statuses[status] = statuses.get(status, 0) + 1
            if n % 200 == 0:
                print(f"{n} requests, RSS {rss_mb(pid):.0f} MB, {time.time() - started:.0f} s", flush=True)
        time.sleep(2)
        after = rss_mb(pid)
    result = {"model": args.model, "warmup": args.warmup, "requests": args.requests, "rss_mb_after_warmup": round(before, 1),
              "rss_mb_after": round(after, 1), "growth": round(after / before - 1, 4), "statuses": statuses,
              "server_errors": sum(n for s, n in statuses.items() if s >= 500), "seconds": round(time.time() - started)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["server_errors"] == 0 and result["growth"] <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
