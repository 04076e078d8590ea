"""llama.cpp backend (llama-cpp-python): GGUF files, with the calculator, batched, on the CPU.

The decoding loop is ours, not `create_completion`'s: the calculator must append tokens the model did not choose
(`<<expr=` is followed by the forced `value>>`), and llama-cpp-python's custom-logits hook is marked "probably
broken" in its own source.

Batching is continuous, on llama.cpp's own multi-sequence KV cache (as its `llama-parallel` example does):
`batch_size` slots each hold one conversation; every `llama_decode` advances all busy slots by one token, and a
slot whose row has finished takes the next prompt at once, in the same call, instead of waiting for the slowest
row of a fixed batch. The token prefix all prompts share (system turn, worked examples) is decoded once into a
sequence of its own and copied into each slot (`llama_memory_seq_cp`: the cells are shared, not recomputed).
The prompt is rendered with the chat template stored in the GGUF, exactly as transformers renders it
(templates.llama_chat_renderer).
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from edgedistill import UserError
from edgedistill.generation.base import MIN_SHARED_PREFIX, Row, shared_prefix
from edgedistill.generation.decoding import choose_tokens
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import llama_chat_renderer

MAX_SLOTS = 16       # llama.cpp is compute-bound on a CPU from about 8 rows on; more only costs KV memory
BATCH_TOKENS = 512   # rows per llama_decode call; a longer prompt goes through in chunks of this size


def rows_this_call(suffix_tokens: int) -> int:
    """How many rows a new prompt adds to the shared decode: a long prompt's head goes through on its own first,
    so it adds only its last token."""
    return 1 if suffix_tokens > BATCH_TOKENS // 2 else suffix_tokens


@dataclass
class _Slot:
    index: int      # which conversation this slot is answering
    position: int   # next KV position of its sequence
    row: Row


class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, gguf_path: str, context_per_row: int = 1024, threads: int | None = None):
        self.threads = threads or os.cpu_count()
        self.context_per_row = context_per_row
        self.generated_tokens = 0   # completion tokens so far, for progress reports (tokens/s)
        try:
            import llama_cpp
        except ImportError:
            raise UserError("GGUF generation needs llama-cpp-python: `make setup` installs it "
                            "(or pip install llama-cpp-python)") from None
        self._lib = llama_cpp
        try:   # the Llama object gives us the model, its tokenizer and metadata; decoding uses our own context
            self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, n_threads=self.threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{gguf_path}: llama.cpp cannot load this GGUF ({exc}); it may be truncated") from None
        self.n_vocab = self.llm.n_vocab()
        self.eos = {self.llm.token_eos()}
        metadata = self.llm.metadata
        eot = metadata.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            self.eos.add(int(eot))
        self._render = llama_chat_renderer(self.llm)   # the GGUF's own chat template
        self._ctx, self._context_slots, self._batch = None, 0, None

    def render(self, messages: list[dict]) -> str:
        return self._render(messages)

    def encode(self, text: str, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def decode(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="ignore")

    def complete(self, prompt: str, sampling: Sampling) -> str:
        """One completion of an already rendered prompt."""
        return self._generate_tokens([self.encode(prompt, special=True)], sampling, 1, None)[0]

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 16,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order."""
        prompts = [self.encode(self.render(m), special=True) for m in conversations]
        return self._generate_tokens(prompts, sampling, batch_size, progress)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.encode(self.render(messages), special=True)

    def single_row(self, ids: list[int], max_new_tokens: int = 0):
        """(the prompt's next-token logits [1, vocab], feed(token) -> the next logits) on sequence 0 of our context:
        the decode the app streams, and the export stage's speed probe times."""
        if len(ids) + max_new_tokens > self.context_per_row:
            raise UserError(f"the prompt has {len(ids)} tokens; with {max_new_tokens} new tokens it exceeds the "
                            f"{self.context_per_row}-token context: ask a shorter question")
        ctx = self._context(1)
        self._lib.llama_memory_clear(self._lib.llama_get_memory(ctx), True)
        self._decode(ctx, [(token, i, 0, i == len(ids) - 1) for i, token in enumerate(ids)])
        first = self._logits(ctx, [(len(ids) - 1) % BATCH_TOKENS])   # the last chunk's row of the last token
        position = len(ids)

        def feed(token: int) -> torch.Tensor:
            nonlocal position
            self._decode(ctx, [(token, position, 0, True)])
            position += 1
            return self._logits(ctx, [0])
        return first, feed

    def _context(self, slots: int):
        """A llama.cpp context with `slots` sequences plus one for the shared prefix. One is kept and remade only
        when a call needs more slots, so its KV memory is allocated once per generator, not once per call."""
        if self._context_slots < slots:
            lib = self._lib
            self.close()
            params = lib.llama_context_default_params()
            params.n_ctx = (slots + 1) * self.context_per_row
            params.n_batch = params.n_ubatch = BATCH_TOKENS
            params.n_seq_max = slots + 1
            params.n_threads = params.n_threads_batch = self.threads
            params.kv_unified = True     # one cache: a prefix copied into every slot is stored once
            from llama_cpp._utils import suppress_stdout_stderr
            with suppress_stdout_stderr(disable=False):   # a context-size warning per call, harmless here
                ctx = lib.llama_init_from_model(self.llm._model.model, params)
            if ctx is None:
                raise UserError(f"llama.cpp could not make a context for {slots} rows of {self.context_per_row} "
                                f"tokens (out of memory?): use a smaller batch_size")
            self._ctx, self._context_slots = ctx, slots
            if self._batch is None:
                self._batch = lib.llama_batch_init(BATCH_TOKENS, 0, 1)
        return self._ctx

    def _generate_tokens(self, prompts: list[list[int]], sampling: Sampling, batch_size: int,
                         progress: str | None) -> list[str]:
        lib = self._lib
        if not prompts:
            return []
        too_long = [i for i, p in enumerate(prompts) if len(p) + sampling.max_new_tokens > self.context_per_row]
        if too_long:
            raise UserError(f"prompt {too_long[0]} has {len(prompts[too_long[0]])} tokens; with "
                            f"{sampling.max_new_tokens} new tokens it exceeds the {self.context_per_row}-token "
                            f"context per row")
        n_slots = max(1, min(batch_size, MAX_SLOTS, len(prompts)))
        ctx = self._context(n_slots)
        memory = lib.llama_get_memory(ctx)
        lib.llama_memory_clear(memory, True)
        prefix_seq = self._context_slots                # the context's last sequence holds the prefix
        prefix = shared_prefix(prompts) if len(prompts) > 1 else []
        if len(prefix) < MIN_SHARED_PREFIX:
            prefix = []
        if prefix:
            self._decode(ctx, [(tok, pos, prefix_seq, False) for pos, tok in enumerate(prefix)])

        generator = torch.Generator().manual_seed(sampling.seed)
        outputs = [""] * len(prompts)
        waiting = list(range(len(prompts)))[::-1]       # pop() takes the next prompt in order
        slots: dict[int, _Slot] = {}
        pending: list[tuple[int, int]] = []             # (slot, token) to feed in the next decode
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")
        while waiting or pending:
            entries, readers = [], []                   # batch rows; slots reading logits, with their row index
            for seq, token in pending:
                slot = slots[seq]
                readers.append((seq, len(entries)))
                entries.append((token, slot.position, seq, True))
                slot.position += 1
            pending = []
            for seq in range(n_slots):                  # free slots take new prompts
                if seq in slots or not waiting:
                    continue
                suffix = prompts[waiting[-1]][len(prefix):]
                if len(entries) + rows_this_call(len(suffix)) > BATCH_TOKENS:
                    break                               # room next round: every reader must be in one decode
                conversation = waiting.pop()
                lib.llama_memory_seq_rm(memory, seq, -1, -1)
                if prefix:
                    lib.llama_memory_seq_cp(memory, prefix_seq, seq, -1, -1)
                slots[seq] = _Slot(conversation, len(prefix) + len(suffix),
                                   Row(sampling, self.decode, self.encode, self.eos))
                prompt_rows = [(tok, len(prefix) + i, seq, i == len(suffix) - 1) for i, tok in enumerate(suffix)]
                if rows_this_call(len(suffix)) < len(suffix):   # a long prompt: its head goes through now, alone
                    self._decode(ctx, prompt_rows[:-1])
                    prompt_rows = prompt_rows[-1:]
                entries += prompt_rows
                readers.append((seq, len(entries) - 1))
            self._decode(ctx, entries)
            chosen = choose_tokens(self._logits(ctx, [index for _, index in readers]), sampling, generator)
            for (seq, _), choice in zip(readers, chosen):
                slot = slots[seq]
                token = slot.row.step(choice)
                if token is None:
                    outputs[slot.index] = slot.row.text.strip()
                    self.generated_tokens += len(slot.row.tokens)
                    del slots[seq]
                    bar.update(1)
                else:
                    pending.append((seq, token))
        bar.close()
        return outputs

    def _decode(self, ctx, entries: list[tuple[int, int, int, bool]]) -> None:
        """Run (token, position, sequence, wants_logits) rows through the model, in chunks of BATCH_TOKENS.
        Logits are read by row index after the call, so only the last chunk may ask for them."""
        lib, batch = self._lib, self._batch
        for start in range(0, len(entries), BATCH_TOKENS):
            chunk = entries[start:start + BATCH_TOKENS]
            batch.n_tokens = len(chunk)
            for i, (token, position, seq, logits) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            code = lib.llama_decode(ctx, batch)
            if code != 0:
                raise UserError(f"llama.cpp decode failed (code {code}): the KV cache is full; "
                                f"use a smaller batch_size or shorter prompts")

    def _logits(self, ctx, indices: list[int]) -> torch.Tensor:
        """The last decode's logits at these batch rows, copied (the next decode overwrites them)."""
        rows = []
        for index in indices:
            address = self._lib.llama_get_logits_ith(ctx, index)
            if not address:   # llama.cpp has no logits for this row: a bug in how the batch was laid out
                raise RuntimeError(f"llama.cpp returned no logits for batch row {index}")
            pointer = ctypes.cast(address, ctypes.POINTER(ctypes.c_float))
            rows.append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)))
        return torch.from_numpy(np.stack(rows))

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
        self._ctx, self._context_slots = None, 0

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: the library may be gone already
            pass
