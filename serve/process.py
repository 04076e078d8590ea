"""`edgedistill serve` in a subprocess on a free loopback port: what the tests and benchmarks/serve_load.py start."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: str, *options: str, env: dict | None = None, log_path=None, timeout_s: float = 180):
    """Yields the app's URL once it accepts connections; stops it on exit.

    The app's output goes to `log_path` (a file, not a pipe nobody reads, which would block the app once full) and
    is shown if the app dies or does not open its port within `timeout_s`.
    """
    port = free_port()
    log_path = log_path or os.devnull
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgedistill.cli", "serve", "--model", model,
                                 "--port", str(port), *options], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    output = open(log_path).read() if log_path != os.devnull else ""
                    raise RuntimeError(f"the app did not start (exit code {proc.poll()}):\n{output[-4000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
