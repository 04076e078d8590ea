"""The Q&A app under load: one user, then 16 users at once, through the app's own API (gradio_client).

    .venv/bin/python benchmarks/serve_load.py [--model runs/quickstart/export/student-Q4_K_M.gguf]   # a few minutes

Starts `edgedistill serve` on a free 127.0.0.1 port with the model (default: the quickstart's Q4_K_M student) and
asks held-out shop-floor questions (shopfloor:heldout), each with the reasoning on (answer_only=False):
  1. single user: 5 questions one after another; for each, the time to the first non-empty answer output (the
     answer streams first, so this is what a user waits before reading it) and to the complete reply;
  2. load: 16 clients, each with its own gradio_client.Client in its own thread, 5 questions each (80 requests,
     all different questions), started together.
An error is a request that raised, came back without an answer, or came back with a message in `status`.
Goal: no errors, and the first answer within 1 s at p50 for a single user.

The second-to-last line gives the loaded first-answer latencies; the last line is
`errors=<n> p50_s=<x> p95_s=<y> first_answer_p50_s=<z>`: errors over all 85 requests, p50/p95 of the complete reply
over the 80 loaded requests, and the single user's first-answer p50.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "runs/quickstart/export/student-Q4_K_M.gguf"


@dataclass
class Timing:
    question: str
    total_s: float
    first_answer_s: float | None    # None: no answer came
    error: str | None = None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"what `edgedistill serve --model` takes "
                                                               f"(default {DEFAULT_MODEL})")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=5, help="questions each client asks, one after another")
    parser.add_argument("--single", type=int, default=5, help="questions of the single-user pass")
    parser.add_argument("--samples", type=int, help="the app's --samples (default: the app's)")
    parser.add_argument("--concurrency", type=int, help="the app's --concurrency (default: the app's)")
    parser.add_argument("--url", help="measure an app already running at this URL instead of starting one")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so a `kill` still stops the app (finally clauses run)

    from edgedistill.records import load_questions
    questions = [q.question for q in load_questions("shopfloor:heldout")]
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"model {args.model}; load average before start: {load_avg}; {os.cpu_count()} CPUs", flush=True)

    options = [f"--{name}={value}" for name, value in (("samples", args.samples), ("concurrency", args.concurrency))
               if value is not None]
    folder = tempfile.mkdtemp(prefix="serve_load-")
    app = contextlib.nullcontext(args.url) if args.url else running_app(args.model, options, folder)
    with app as url:
        single = one_user(url, questions[:args.single])
        loaded = under_load(url, questions, args.single, args.clients, args.per_client)

    report(single, loaded, args)


def running_app(model: str, options: list[str], folder: str):
    """The app on a free loopback port, its feedback in `folder` (not the default ./feedback.jsonl)."""
    from edgedistill.serve.process import serving
    return serving(model, "--feedback", str(Path(folder) / "feedback.jsonl"), *options,
                   log_path=Path(folder) / "app.log", timeout_s=300)


def new_client(url: str):
    from gradio_client import Client
    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def ask(client, question: str, timeout_s: float = 600) -> Timing:
    """One question; polls the streamed outputs so the first non-empty answer is timed to about 10 ms."""
    start = time.perf_counter()
    first = None
    try:
        job = client.submit(question, False, api_name="/answer")
        while not job.done():
            if first is None and any(str(output[0]).strip() for output in job.outputs()):
                first = time.perf_counter() - start
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"no reply within {timeout_s} s")
            time.sleep(0.01)
        result = job.result()
        answer, status = result[0], result[4]     # outputs: answer, computation, rationale, confidence, status
    except Exception as e:   # noqa: BLE001  a failed request is a result here, not a crash
        return Timing(question, time.perf_counter() - start, first, f"{type(e).__name__}: {e}")
    total = time.perf_counter() - start
    if first is None and str(answer).strip():
        first = total          # the answer came only with the final output
    error = None if str(answer).strip() else "no answer"
    if str(status).strip():
        error = f"status: {str(status).strip()[:200]}"
    return Timing(question, total, first, error)


def one_user(url: str, questions: list[str]) -> list[Timing]:
    """The questions one after another, each row printed as it is measured (a slow machine shows progress)."""
    print(f"\nsingle user, {len(questions)} questions one after another:")
    print(f"  {'first answer s':>14}  {'complete s':>10}  question", flush=True)
    timings = []
    for question in questions:
        t = ask(new_client(url), question)
        first = f"{t.first_answer_s:.2f}" if t.first_answer_s is not None else "-"
        print(f"  {first:>14}  {t.total_s:>10.2f}  {t.question[:70]}{'  ERROR ' + t.error if t.error else ''}",
              flush=True)
        timings.append(t)
    return timings


def under_load(url: str, questions: list[str], offset: int, clients: int, per_client: int) -> list[Timing]:
    """`clients` threads, each with its own Client, connected first and then released together."""
    results: list[Timing] = []
    lock = threading.Lock()
    start_together = threading.Barrier(clients)

    def one_client(c: int):
        try:
            client = new_client(url)
        except Exception as e:   # noqa: BLE001
            start_together.wait()
            with lock:
                results.extend(Timing("(connect)", 0.0, None, f"connect: {e}") for _ in range(per_client))
            return
        start_together.wait()
        for k in range(per_client):
            timing = ask(client, questions[(offset + c * per_client + k) % len(questions)])
            with lock:
                results.append(timing)

    threads = [threading.Thread(target=one_client, args=(c,), daemon=True) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"load pass: {len(results)} requests from {clients} clients in {time.perf_counter() - started:.1f} s",
          flush=True)
    return results


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(single: list[Timing], loaded: list[Timing], args):
    ok = [t for t in loaded if not t.error]
    totals = [t.total_s for t in ok]
    firsts = [t.first_answer_s for t in ok if t.first_answer_s is not None]
    print(f"\nload: {args.clients} clients x {args.per_client} questions = {len(loaded)} requests, "
          f"{len(loaded) - len(ok)} errors")
    print(f"  {'':14}  {'p50':>7}  {'p95':>7}  {'max':>7}")
    for name, values in (("first answer s", firsts), ("complete s", totals)):
        print(f"  {name:14}  {pct(values, 50):>7.2f}  {pct(values, 95):>7.2f}  {max(values, default=float('nan')):>7.2f}")
    errors = [t for t in single + loaded if t.error]
    for t in errors[:5]:
        print(f"  error: {t.error}  ({t.question[:60]})")
    # other work on the machine slows llama.cpp a lot (its threads wait on each other), so say how busy it was
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    single_firsts = [t.first_answer_s for t in single if t.first_answer_s is not None]
    print(f"\nloaded first_answer_p50_s={pct(firsts, 50):.3f} first_answer_p95_s={pct(firsts, 95):.3f}")
    print(f"errors={len(errors)} p50_s={pct(totals, 50):.3f} p95_s={pct(totals, 95):.3f} "
          f"first_answer_p50_s={pct(single_firsts, 50):.3f}")


if __name__ == "__main__":
    main()
