"""The Q&A app under load: one user, then 16 users at once, through the app's own API (gradio_client).

    .venv/bin/python benchmarks/serve_load.py [--model runs/quickstart/export/student-Q4_K_M.gguf]   # a few minutes
    .venv/bin/python benchmarks/serve_load.py --minutes 20 --clients 4                               # the soak

Starts `edgedistill serve` on a free 127.0.0.1 port with the model (default: the quickstart's Q4_K_M student) and
asks held-out shop-floor questions (shopfloor:heldout), each with the reasoning on (answer_only=False):
  1. single user: 8 questions one after another; for each, the time to the first non-empty answer output (the
     answer streams first, so this is what a user waits before reading it) and to the complete reply;
  2. load: 16 clients, each with its own gradio_client.Client in its own thread, 5 questions each (80 requests,
     all different questions), started together.
An error is a request that raised, came back without an answer, or came back with a message in `status`.
Goals (issue 20): no errors, p50 <= 15 s under load, first answer <= 3 s under load and <= 0.3 s alone,
serial_speedup >= 2.

The last line is `errors=N p50_s=X p95_s=Y first_answer_p50_s=Z loaded_first_answer_p50_s=W serial_speedup=R`:
errors over all requests; p50/p95 of the complete reply (answer, reasoning, confidence samples) over the loaded
requests; the single user's first-answer p50; the first answer's p50 under load; and questions per minute under
load over questions per minute one at a time (the single-user pass), both measured in this run.

Soak (`--minutes M`): `clients` users ask questions one after another for M minutes; each minute prints its errors,
p95 and the app's resident memory (RSS, read from /proc), and the last line is
`soak_minutes=M requests=N errors=E rss_start_mb=A rss_end_mb=B rss_growth=G rss_growth_after_first_minute=W
p95_max_s=P`: the growth from the start includes the first questions' one-off allocations (Gradio's and the
client's caches, the first decode's buffers), the one after the first minute is what a leak would show as.
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
    parser.add_argument("--single", type=int, default=8, help="questions of the single-user pass (one at a time: "
                                                              "also the serial rate of serial_speedup)")
    parser.add_argument("--samples", type=int, help="the app's --samples (default: the app's)")
    parser.add_argument("--concurrency", type=int, help="the app's --concurrency (default: the app's)")
    parser.add_argument("--url", help="measure an app already running at this URL instead of starting one")
    parser.add_argument("--minutes", type=float, help="soak instead: `clients` users for this many minutes")
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
        if args.minutes:
            return soak(url, questions, args.clients, args.minutes, app_pid(url))
        single = one_user(url, questions[:args.single])
        started = time.perf_counter()
        loaded = under_load(url, questions, args.single, args.clients, args.per_client)
        loaded_seconds = time.perf_counter() - started

    report(single, loaded, loaded_seconds, args)


def app_pid(url: str) -> int | None:
    """The process listening on the app's port (its RSS is what the soak watches), from /proc; None if not ours."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in open(table).read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    return int(pid)
    return None


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, questions: list[str], clients: int, minutes: float, pid: int | None) -> None:
    """`clients` users asking one question after another until `minutes` are up; a line per minute."""
    results: list[tuple[float, Timing]] = []     # (minute it ended in, timing)
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + minutes * 60
    rss_start = rss_mb(pid)
    print(f"\nsoak: {clients} clients for {minutes:g} minutes; app RSS at start {rss_start:.0f} MB", flush=True)

    def one_client(c: int):
        client, k = new_client(url), 0
        while time.perf_counter() < deadline:
            timing = ask(client, questions[(c * 997 + k) % len(questions)], poll_s=0.05)
            with lock:
                results.append(((time.perf_counter() - started) // 60, timing))
            k += 1

    threads = [threading.Thread(target=one_client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    print(f"  {'minute':>6}  {'requests':>8}  {'errors':>6}  {'p95 s':>7}  {'RSS MB':>7}", flush=True)
    minute, p95s, rss_warm = 0, [], None
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        now = (time.perf_counter() - started) // 60
        if now > minute or not any(t.is_alive() for t in threads):
            with lock:
                done = [t for m, t in results if m == minute]
            p95 = pct([t.total_s for t in done if not t.error], 95)
            p95s.append(p95)
            rss = rss_mb(pid)
            rss_warm = rss if rss_warm is None else rss_warm      # after the first minute: caches and pools made
            print(f"  {minute + 1:>6.0f}  {len(done):>8}  {sum(bool(t.error) for t in done):>6}  {p95:>7.2f}  "
                  f"{rss:>7.0f}", flush=True)
            minute = now
    rss_end = rss_mb(pid)
    errors = [t for _, t in results if t.error]
    for t in errors[:5]:
        print(f"  error: {t.error}  ({t.question[:60]})")
    print(f"soak_minutes={minutes:g} requests={len(results)} errors={len(errors)} rss_start_mb={rss_start:.0f} "
          f"rss_end_mb={rss_end:.0f} rss_growth={rss_end / rss_start - 1:.3f} "
          f"rss_growth_after_first_minute={rss_end / (rss_warm or rss_start) - 1:.3f} "
          f"p95_max_s={max((p for p in p95s if p == p), default=float('nan')):.2f}")


def running_app(model: str, options: list[str], folder: str):
    """The app on a free loopback port, its feedback in `folder` (not the default ./feedback.jsonl)."""
    from edgedistill.serve.process import serving
    return serving(model, "--feedback", str(Path(folder) / "feedback.jsonl"), *options,
                   log_path=Path(folder) / "app.log", timeout_s=300)


def new_client(url: str):
    from gradio_client import Client
    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def ask(client, question: str, timeout_s: float = 600, poll_s: float = 0.01) -> Timing:
    """One question; polls the streamed outputs every `poll_s` (10 ms alone; 50 ms under load, where 16 threads
    polling every 10 ms would take CPU from the app they measure, on the same 2 cores)."""
    start = time.perf_counter()
    first = None
    try:
        job = client.submit(question, False, api_name="/answer")
        while not job.done():
            if first is None and any(str(output[0]).strip() for output in job.outputs()):
                first = time.perf_counter() - start
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"no reply within {timeout_s} s")
            time.sleep(poll_s)
        result = job.result()
        answer, status = result[0], result[4]     # outputs: answer, computation, rationale, confidence, status
    except Exception as e:   # a failed request is a result here, not a crash
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
        except Exception as e:
            start_together.wait()
            with lock:
                results.extend(Timing("(connect)", 0.0, None, f"connect: {e}") for _ in range(per_client))
            return
        start_together.wait()
        for k in range(per_client):
            timing = ask(client, questions[(offset + c * per_client + k) % len(questions)], poll_s=0.05)
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


def report(single: list[Timing], loaded: list[Timing], loaded_seconds: float, args):
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
    # one at a time: the single-user pass, question after question; batched: the load pass, wall clock
    serial_per_minute = 60 * len(single) / sum(t.total_s for t in single) if single else float("nan")
    batched_per_minute = 60 * len(ok) / loaded_seconds
    print(f"questions per minute: one at a time {serial_per_minute:.1f}, under load {batched_per_minute:.1f}")
    print(f"errors={len(errors)} p50_s={pct(totals, 50):.3f} p95_s={pct(totals, 95):.3f} "
          f"first_answer_p50_s={pct(single_firsts, 50):.3f} loaded_first_answer_p50_s={pct(firsts, 50):.3f} "
          f"serial_speedup={batched_per_minute / serial_per_minute:.2f}")


if __name__ == "__main__":
    main()
