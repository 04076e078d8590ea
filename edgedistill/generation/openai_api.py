"""Any OpenAI-compatible server as a generation backend: vLLM, SGLang, llama.cpp's server, hosted APIs.

    teacher:
      model: http://127.0.0.1:8000/v1      # the server's base URL
      template: smollm2-135m-instruct      # optional: whose chat template renders the prompts (see below)

A server cannot run our calculator in the middle of its decoding, so the calculator works between requests
("verify and continue", continuation.py): a completion whose arithmetic the calculator corrects is cut after the
`=`, gets the calculator's `value>>` and is sent back to be continued. Continuing needs the raw prompt, so requests
go to `/v1/completions` with the chat template applied here (templates.chat_renderer): taken from `template` (any
model spec the resolver takes; a GGUF is read vocabulary-only), or else from the model id the server reports, when
that id resolves locally (llama.cpp's server reports the GGUF path it serves; vLLM a hub id, found in the local
Hugging Face cache).

Requests run concurrently (`concurrency` at a time), each with a timeout; connection errors, timeouts, 429 and 5xx
are retried with exponential backoff; a server that stays down, or answers with something that is not a
completion, is a UserError that says so. Each sample sends its own seed (seed + index), so a rerun asks for the
same samples.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from tqdm import tqdm

from edgedistill import UserError
from edgedistill.generation.continuation import MAX_CONTINUATIONS, extend_with_calculator, finish
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import ChatRenderer, chat_renderer

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIGenerator:
    backend = "openai"

    def __init__(self, base_url: str, render: ChatRenderer, model: str | None = None,
                 api_key: str | None = None, concurrency: int = 8, timeout: float = 120.0, retries: int = 4,
                 backoff: float = 0.5):
        self.base_url = base_url.rstrip("/")
        self._render, self.concurrency, self.timeout, self.retries, self.backoff = (
            render, concurrency, timeout, retries, backoff)
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.model = model or server_model_id(self.base_url, timeout, self.api_key)
        self.generated_tokens = 0   # completion tokens so far (the server's count), for progress reports
        self._count_lock = threading.Lock()

    def render(self, messages: list[dict]) -> str:
        return self._render(messages)

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 16,
                 progress: str | None = None) -> list[str]:
        prompts = [self.render(m) for m in conversations]
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            # each sample its own seed, so a rerun asks for the same samples
            futures = [pool.submit(self.complete, p, replace(sampling, seed=sampling.seed + i))
                       for i, p in enumerate(prompts)]
            outputs = []
            for future in futures:
                outputs.append(future.result())   # raises the first failure (a UserError) after the pool drains
                bar.update(1)
        bar.close()
        return outputs

    def complete(self, prompt: str, sampling: Sampling) -> str:
        """One completion of an already rendered prompt, seeded by `sampling.seed`, verified and continued."""
        text, used = "", 0
        for _ in range(MAX_CONTINUATIONS):
            budget = sampling.max_new_tokens - used
            if budget <= 0:
                break
            piece, tokens = self._request(prompt + text, budget, sampling)
            used += tokens
            with self._count_lock:
                self.generated_tokens += tokens
            text, finished = extend_with_calculator(text, piece, sampling)
            if finished:
                break
        return finish(text, sampling)

    def _request(self, prompt: str, max_tokens: int, sampling: Sampling) -> tuple[str, int]:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "seed": sampling.seed,
                   "temperature": sampling.temperature, "top_p": sampling.top_p if sampling.temperature > 0 else 1.0}
        raw = self._post("/completions", payload)
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, IndexError, TypeError):
            raise UserError(f"{self.base_url} answered something that is not an OpenAI completion: "
                            f"{raw[:200]!r}") from None
        tokens = (data.get("usage") or {}).get("completion_tokens") or max(1, len(text) // 4)
        return text, int(tokens)

    def _post(self, path: str, payload: dict) -> bytes:
        return http_call(self.base_url + path, payload, self.timeout, self.retries, self.backoff, self.api_key)


def http_call(url: str, payload: dict | None, timeout: float, retries: int, backoff: float,
              api_key: str | None = None) -> bytes:
    """POST (or GET without payload) with retries and exponential backoff on transient failures."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(payload).encode() if payload is not None else None
    delay, last = backoff, ""
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()[:200]
            if exc.code not in RETRY_STATUS:
                raise UserError(f"{url}: HTTP {exc.code} {body!r}") from None
            last = f"HTTP {exc.code}"
        except (OSError, http.client.HTTPException) as exc:   # refused, reset, timed out, torn answer
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < retries:
            time.sleep(delay)
            delay *= 2
    raise UserError(f"no answer from {url} after {retries + 1} tries ({last}): is the server running?")


def server_model_id(base_url: str, timeout: float = 10.0, api_key: str | None = None) -> str:
    """The first model id the server lists at /v1/models."""
    raw = http_call(base_url + "/models", None, timeout, retries=2, backoff=0.5, api_key=api_key)
    try:
        return json.loads(raw)["data"][0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f"{base_url}/models answered something that is not a model list: {raw[:200]!r}") from None


def load_openai_generator(base_url: str, template: str | None = None, allow_network: bool = False,
                          **options) -> OpenAIGenerator:
    model = options.pop("model", None) or server_model_id(base_url.rstrip("/"))
    spec = template or model
    try:
        render = chat_renderer(spec, allow_network)
    except UserError as exc:
        raise UserError(f"the prompts for {base_url} need a chat template: the server's model {model!r} is not "
                        f"found here ({exc}); set teacher.template to a local model spec (GGUF, HF folder, "
                        f"packaged name) with the same template") from None
    return OpenAIGenerator(base_url, render, model=model, **options)
