"""`edgedistill serve`: the page (serve/app.py) and the OpenAI-compatible API (serve/api.py) in one process, on
one port, over one model and one scheduler; checked before the model loads, bound to loopback unless told.

Offline by default: 127.0.0.1, Gradio analytics off, system fonts (no web fonts, no CDN), no share link, no API docs
page (FastAPI's fetches its files from a CDN). On the LAN: a login (--auth) always, HTTPS (--tls-cert, --tls-key)
so that the password does not cross the network in clear text; without TLS the app starts with a warning.
The page takes no files, so Gradio's upload route is off; errors reach a client as one line, never as Python's
descriptions of objects, and the console keeps the traceback.
"""
from __future__ import annotations

import errno
import socket
import ssl
import sys
from pathlib import Path

from edgedistill import UserError
from edgedistill.config import ServeConfig
from edgedistill.generation import load_generator
from edgedistill.serve.api import add_openai_routes
from edgedistill.serve.answering import QA
from edgedistill.serve.app import build_app
from edgedistill.serve.feedback import FeedbackLog


def check_port_free(host: str, port: int) -> None:
    """Pre-flight: bind the port as gradio will (SO_REUSEADDR), so a port in use is reported before the model loads,
    not as a traceback after."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, OverflowError) as exc:
        hint = ("another program (an earlier `edgedistill serve`?) is listening there: stop it, or pass --port "
                "with a free port" if getattr(exc, "errno", None) == errno.EADDRINUSE else "check --host and --port")
        raise UserError(f"cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}): {hint}") from None


def parse_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]] | None:
    """USER:PASSWORD, or a file of such lines."""
    lines = [auth] if auth else []
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise UserError(f"{auth_file}: no such auth file (one USER:PASSWORD per line)")
        lines += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    pairs = []
    for number, line in enumerate(lines, 1):
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise UserError(f"auth entry {number} must be USER:PASSWORD, both non-empty")
        pairs.append((user, password))
    return pairs or None


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_tls(settings: ServeConfig) -> bool:
    """Pre-flight of serve.tls_cert / tls_key: both or neither, and a pair Python's ssl loads. True: HTTPS."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise UserError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    if not settings.tls_cert:
        return False
    for what, path in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        if not Path(path).is_file():
            raise UserError(f"{what} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UserError(f"cannot use {settings.tls_cert} with {settings.tls_key} for HTTPS ({exc}): give a PEM "
                        f"certificate and its private key (docs/serve.md shows how to make them)") from None
    return True


# The page's own requests (a question, its options, a thumb) are a few KiB; Gradio keeps the inputs of every call
# it queues until a client fetches the result, so 2 MB posted to a page route and never fetched stayed in memory
# (benchmarks/api_hostile_memory.py: +206 MB over 2,000 hostile requests). /v1 has its own limit (api.body_of).
PAGE_BODY_LIMIT = 256 * 1024


def guarded_site(site):
    """`site` with Gradio's upload route answered 404 (it writes whatever it is sent under the temp folder, and this
    page has no file input) and the page's routes refusing a body over PAGE_BODY_LIMIT with 413. Plain ASGI, not
    an HTTP middleware: those hide a client's disconnect from the routes."""
    from fastapi.responses import JSONResponse

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/").endswith("/upload"):
            await JSONResponse({"detail": "this app takes no files"}, status_code=404)(scope, receive, send)
            return
        if scope["type"] == "http" and not scope["path"].startswith("/v1/"):
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > PAGE_BODY_LIMIT:
                await JSONResponse({"detail": f"the page's requests are at most {PAGE_BODY_LIMIT // 1024} KiB"},
                                   status_code=413)(scope, receive, send)
                return
            receive = bounded(receive, PAGE_BODY_LIMIT)
        await site(scope, receive, send)
    return guarded


def bounded(receive, limit: int):
    """`receive` that ends the request as a disconnect once its body passes `limit` bytes (a chunked body has no
    Content-Length to refuse up front)."""
    seen = 0

    async def receive_bounded():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message
    return receive_bounded


def serve(model: str, settings: ServeConfig, auth: list[tuple[str, str]] | None = None,
          calibration_file: str | None = None, allow_network: bool = False, load=load_generator,
          tables: list[str] = (), value_hints: bool = False, name_hints: bool = False) -> None:
    """`load`: how the model spec becomes a generator (load_generator's signature; tests pass stand-ins);
    `tables`: the plant's tables the student may query (files, folders, a postgresql:// URL)."""
    from edgedistill.calibration import calibration_of, calibration_path_for, load_calibration
    if settings.host not in LOOPBACK and not auth:
        raise UserError(f"--host {settings.host} opens the app to the network: give --auth USER:PASSWORD (or "
                        f"--auth-file) so only your people can use it")
    # pre-flight: what would otherwise fail only once the model has loaded (minutes on a CPU)
    https = check_tls(settings)
    if settings.host not in LOOPBACK and not https:
        print(f"edgedistill: WARNING: {settings.host} is reachable from the network over plain HTTP: passwords and "
              f"answers cross it in clear text. Give --tls-cert and --tls-key (docs/serve.md, 'On the LAN').",
              file=sys.stderr, flush=True)
    check_port_free(settings.host, settings.port)
    from edgedistill.tables import open_tables
    tool = open_tables(list(tables)) if tables else None     # a bad table file fails here, before the model loads
    feedback = FeedbackLog(settings.feedback, model, settings.answer_type, settings.max_question_chars)
    # given, else beside the model, else the one its run's eval stage fitted (the run's manifest names it)
    found = Path(calibration_file) if calibration_file else calibration_of(model) or calibration_path_for(model)
    calibration = load_calibration(found) if calibration_file or found.is_file() else None
    generator = load(model, allow_network, threads=settings.threads or None)
    qa = QA(generator, settings, calibration, tables=tool, value_hints=value_hints, name_hints=name_hints)
    app, theme = build_app(qa, feedback, model)
    how = (f"calibrated by {found} (k={calibration.k})" if calibration
           else f"uncalibrated ({found} not found): raw agreement of {qa.samples} samples")
    scheme = "https" if https else "http"
    print(f"edgedistill: serving {model} ({generator.backend}) on {scheme}://{settings.host}:{settings.port}; "
          f"confidence {how}; feedback to {feedback.path}  (Ctrl+C stops)", flush=True)
    if tool is not None:
        print(f"tables: {', '.join(f'{t.name} ({t.rows} rows)' for t in tool.tables)}; queries are read-only",
              flush=True)
    app.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)   # no Swagger page fetching its files from a CDN
    add_openai_routes(api, qa, api_model_name(model), auth)
    # show_error off: the page's own handlers say what went wrong in words; Gradio's would send exception texts
    site = gr.mount_gradio_app(api, app, path="/", auth=auth, theme=theme, ssr_mode=False, enable_monitoring=False,
                               footer_links=["api"], show_error=False, server_name=settings.host,
                               server_port=settings.port)
    print(f"OpenAI-compatible API: {scheme}://{settings.host}:{settings.port}/v1 (model {api_model_name(model)!r})",
          flush=True)
    uvicorn.run(guarded_site(site), host=settings.host, port=settings.port, log_level="warning",
                **({"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key} if https else {}))


def api_model_name(model: str) -> str:
    """The model's name in /v1/models: its file or folder name (what a client shows in its model list)."""
    return Path(str(model).rstrip("/")).name or str(model)
