"""llama.cpp backend (llama-cpp-python): GGUF files, with the calculator, on the CPU.

The decoding loop is ours, not `create_completion`'s: the calculator must append tokens the model did not choose
(`<<expr=` is followed by the forced `value>>`), and llama-cpp-python's custom-logits hook is marked "probably
broken" in its own source. Our loop evaluates one token at a time on llama.cpp's KV cache and picks the next
token from the last logits (argmax, or temperature / top-p sampling).
The prompt is rendered with the chat template stored in the GGUF, exactly as transformers renders it.
"""
from __future__ import annotations

import os
import re

import numpy as np
from tqdm import tqdm

from edgedistill import UserError
from edgedistill.calculator import fill_for
from edgedistill.generate import Sampling

ANSWER_LINE_DONE = re.compile(r"Answer:[^\n]*\S[^\n]*\n")


class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, gguf_path: str, n_ctx: int = 2048, threads: int | None = None):
        threads = threads or os.cpu_count()
        try:
            import llama_cpp
        except ImportError:
            raise UserError("GGUF generation needs llama-cpp-python: `make setup` installs it "
                            "(or pip install llama-cpp-python)") from None
        self._lib = llama_cpp
        try:
            self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=threads, verbose=False,
                                       logits_all=False)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{gguf_path}: llama.cpp cannot load this GGUF ({exc}); it may be truncated") from None
        self.n_vocab = self.llm.n_vocab()
        self.eos = {self.llm.token_eos()}
        metadata = self.llm.metadata
        eot = metadata.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            self.eos.add(int(eot))
        template = metadata.get("tokenizer.chat_template")
        tokens = self.llm._model.token_get_text
        self.formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            self.formatter = Jinja2ChatFormatter(template, eos_token=tokens(self.llm.token_eos()),
                                                 bos_token=tokens(self.llm.token_bos()))

    def render(self, messages: list[dict]) -> str:
        if self.formatter is None:
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.formatter(messages=messages).prompt

    def encode(self, text: str, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="ignore")

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 1,
                 progress: str | None = None) -> list[str]:
        rng = np.random.default_rng(sampling.seed)
        outputs = []
        for messages in tqdm(conversations, desc=progress, disable=progress is None, unit="q"):
            outputs.append(self.complete(self.render(messages), sampling, rng))
        return outputs

    def complete(self, prompt: str, sampling: Sampling, rng: np.random.Generator | None = None) -> str:
        rng = rng or np.random.default_rng(sampling.seed)
        self._feed_prompt(self.encode(prompt, special=True))
        generated: list[int] = []
        queue: list[int] = []
        text = ""
        while len(generated) < sampling.max_new_tokens:
            token = queue.pop(0) if queue else self._choose(sampling, rng)
            if token in self.eos:
                break
            generated.append(token)
            self.llm.eval([token])
            text = self.decode(generated)
            if not queue and sampling.calculator:
                fill = fill_for(text)
                if fill:
                    queue = self.encode(fill)
            if sampling.stop_after_answer and not queue and ANSWER_LINE_DONE.search(text):
                break
        return text.strip()

    def _feed_prompt(self, tokens: list[int]) -> None:
        # A fresh context per prompt. Keeping a shared prefix (kv_cache_seq_rm past it) was measured 10x slower
        # with llama-cpp-python 0.3.36 on a CPU: 7.5 s instead of 0.7 s for a 57-token prompt.
        self.llm.reset()
        self.llm.eval(tokens)

    def _choose(self, sampling: Sampling, rng: np.random.Generator) -> int:
        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        if sampling.temperature <= 0:
            return int(np.argmax(logits))
        scaled = (logits - logits.max()) / sampling.temperature
        probs = np.exp(scaled)
        probs /= probs.sum()
        if sampling.top_p < 1.0:
            order = np.argsort(-probs)
            keep = order[:int(np.searchsorted(np.cumsum(probs[order]), sampling.top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(rng.choice(self.n_vocab, p=probs))
