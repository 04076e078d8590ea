"""llama.cpp backend (llama-cpp-python): GGUF files, with the calculator, batched, on the CPU or a GPU.

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

Every layer goes to the GPU when llama-cpp-python was built with a GPU backend (`device.gpu_layers()`: -1; build it
with CMAKE_ARGS="-DGGML_CUDA=on"), none on a CPU build or with EDGEDISTILL_DEVICE=cpu. The layers are placed when
the model loads, so our own contexts, made on that model, decode where its weights are.
"""
from __future__ import annotations

import ctypes
import functools
import os
from collections import deque
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from edgedistill import UserError, device
from edgedistill.generation.base import MIN_SHARED_PREFIX, LiveRow, Prompt, Row, shared_prefix
from edgedistill.generation.decoding import choose_tokens, token_probability
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import llama_chat_renderer

MAX_SLOTS = 16       # llama.cpp is compute-bound on a CPU from about 8 rows on; more only costs KV memory
BATCH_TOKENS = 512   # rows per llama_decode call; a longer prompt goes through in chunks of this size


def rows_this_call(suffix_tokens: int) -> int:
    """How many rows a new prompt adds to the shared decode: a long prompt's head goes through on its own first,
    so it adds only its last token."""
    return 1 if suffix_tokens > BATCH_TOKENS // 2 else suffix_tokens


class LlamaCppGenerator:
    backend = "llama.cpp"

    def __init__(self, gguf_path: str, context_per_row: int = 1024, threads: int | None = None,
                 gpu_layers: int | None = None):
        """`gpu_layers`: llama.cpp's n_gpu_layers (-1: all; 0: the CPU); None asks `device.gpu_layers()`."""
        self.threads = threads or os.cpu_count()
        self.context_per_row = context_per_row
        self.generated_tokens = 0   # completion tokens so far, for progress reports (tokens/s)
        try:
            import llama_cpp
        except ImportError:
            raise UserError("GGUF generation needs llama-cpp-python: `make setup` installs it "
                            "(or pip install llama-cpp-python)") from None
        self._lib = llama_cpp
        self.gpu_layers = device.gpu_layers() if gpu_layers is None else gpu_layers
        try:   # the Llama object gives us the model, its tokenizer and metadata; decoding uses our own context
            self.llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, n_threads=self.threads,
                                       n_gpu_layers=self.gpu_layers, verbose=False)
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
        self.check_fits(ids, max_new_tokens)
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
            # Not inside llama_cpp's suppress_stdout_stderr: it swaps the process's stdout and stderr, so the app's
            # banner and other threads' tracebacks vanished while it ran, and two overlapping calls (two threads)
            # left them pointing at /dev/null for good. Llama(verbose=False) already drops llama.cpp's warnings.
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
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            self.check_fits(prompt, sampling.max_new_tokens, f"prompt {i}")
        generator = torch.Generator().manual_seed(sampling.seed)
        engine = SlotEngine(self, slots=max(1, min(batch_size, MAX_SLOTS, len(prompts))),
                            choose=lambda logits, rows: choose_tokens(logits, sampling, generator),
                            prefix=shared_prefix(prompts) if len(prompts) > 1 else [])
        outputs = [""] * len(prompts)
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")

        def finished(index: int, row: Row) -> None:
            outputs[index] = row.text.strip()
            self.generated_tokens += len(row.tokens)
            bar.update(1)
        waiting = deque(Prompt(prompt, [LiveRow(Row(sampling, self.decode, self.encode, self.eos),
                                                on_done=functools.partial(finished, i))])
                        for i, prompt in enumerate(prompts))
        while waiting or engine.busy():
            engine.step(waiting)
        bar.close()
        return outputs

    def slot_engine(self, slots: int, choose: Callable[[torch.Tensor, list[LiveRow]], list[int]],
                    prefix: list[int] = (), answers_first: bool = False) -> "SlotEngine":
        """The decode loop's engine on this model's context, for a scheduler that feeds it prompts as they come."""
        return SlotEngine(self, slots, choose, prefix, answers_first)

    def check_fits(self, prompt: list[int], max_new_tokens: int, what: str = "the prompt") -> None:
        if len(prompt) + max_new_tokens > self.context_per_row:
            raise UserError(f"{what} has {len(prompt)} tokens; with {max_new_tokens} new tokens it exceeds the "
                            f"{self.context_per_row}-token context per row: ask a shorter question")

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


class SlotEngine:
    """One llama.cpp context whose sequences ("slots") each hold a row being decoded. Each `step` is one
    llama_decode: every busy row advances by one token, and the prompts waiting at the head of the queue that fit
    are prefilled in the same call (continuous batching: a finished row's slot is taken at once). A prompt is
    decoded into its first row's slot and copied into the others (`llama_memory_seq_cp` shares the cells), so a
    question's greedy row and its confidence samples cost one prefill. `prefix`: tokens every prompt starting
    with them shares (a system turn, worked examples), decoded once into a sequence of its own.

    `answers_first` (the app): while some row is still writing its Answer: line, or a prompt waits, the rows past
    theirs (writing reasoning) go into every other decode only. On a CPU a decode costs about its rows, so the
    answers people wait for come sooner, and the reasoning, read after, a little later."""

    def __init__(self, model: "LlamaCppGenerator", slots: int,
                 choose: Callable[[torch.Tensor, list[LiveRow]], list[int]], prefix: list[int] = (),
                 answers_first: bool = False):
        self.model, self.lib, self.slots, self.choose = model, model._lib, slots, choose
        self.answers_first, self.turn = answers_first, 0
        self.ctx = model._context(slots)
        self.memory = self.lib.llama_get_memory(self.ctx)
        self.lib.llama_memory_clear(self.memory, True)
        self.prefix_seq = model._context_slots             # the context's last sequence holds the prefix
        self.prefix = list(prefix) if len(prefix) >= MIN_SHARED_PREFIX else []
        if self.prefix:
            model._decode(self.ctx, [(tok, pos, self.prefix_seq, False) for pos, tok in enumerate(self.prefix)])
        self.live: dict[int, tuple[Prompt, LiveRow]] = {}  # slot -> its row
        self.pending: list[tuple[int, int]] = []           # (slot, token) to feed in the next decode

    def busy(self) -> bool:
        return bool(self.live)

    def free_slots(self) -> list[int]:
        return [slot for slot in range(self.slots) if slot not in self.live]

    def step(self, waiting: deque) -> int:
        """One decode: the busy rows' last tokens, then prompts popped from the left of `waiting` while they fit.
        Returns how many rows it advanced."""
        entries, readers, later = [], [], []   # batch rows; (slot, batch row its logits are); rows left for later
        self.turn += 1
        reasoning_waits = self.answers_first and self.turn % 2 == 0 and (
            bool(waiting) or any(not self.live[slot][1].row.answered for slot, _ in self.pending))
        for slot, token in self.pending:
            if self.live[slot][0].cancelled:
                del self.live[slot]
                continue
            if reasoning_waits and self.live[slot][1].row.answered:
                later.append((slot, token))
                continue
            readers.append((slot, len(entries)))
            entries.append((token, self.live[slot][1].position, slot, True))
            self.live[slot][1].position += 1
        self.pending, copies = later, []
        while waiting and (placed := self._place(waiting[0], entries, readers)):
            waiting.popleft()
            copies.append(placed)
        if not entries:
            return 0
        self.model._decode(self.ctx, entries)
        for first, others in copies:       # the prompt is in its first slot now: share it with the rest
            for slot in others:
                self.lib.llama_memory_seq_cp(self.memory, first, slot, -1, -1)
        logits = self.model._logits(self.ctx, [index for _, index in readers])
        chosen = self.choose(logits, [self.live[slot][1] for slot, _ in readers])
        for (slot, _), choice, row_logits in zip(readers, chosen, logits):
            self._advance(slot, choice, row_logits)
        return len(readers)

    def _place(self, prompt: Prompt, entries: list, readers: list) -> tuple[int, list[int]] | None:
        """Admit `prompt` into this step if its rows have slots and its tokens room; (first slot, other slots)."""
        if prompt.cancelled:         # its user left while it waited: taken off the queue, nothing decoded
            return -1, []
        free = self.free_slots()
        uses_prefix = len(prompt.ids) > len(self.prefix) > 0 and prompt.ids[:len(self.prefix)] == self.prefix
        start = len(self.prefix) if uses_prefix else 0
        suffix = prompt.ids[start:]
        if len(prompt.rows) > len(free) or len(entries) + rows_this_call(len(suffix)) > BATCH_TOKENS:
            return None
        first, *others = free[:len(prompt.rows)]
        for slot in (first, *others):
            self.lib.llama_memory_seq_rm(self.memory, slot, -1, -1)
        if uses_prefix:
            self.lib.llama_memory_seq_cp(self.memory, self.prefix_seq, first, -1, -1)
        prompt_rows = [(tok, start + i, first, i == len(suffix) - 1) for i, tok in enumerate(suffix)]
        if rows_this_call(len(suffix)) < len(suffix):      # a long prompt: its head goes through now, alone
            self.model._decode(self.ctx, prompt_rows[:-1])
            prompt_rows = prompt_rows[-1:]
        entries += prompt_rows
        for slot, live in zip((first, *others), prompt.rows):
            live.position = len(prompt.ids)
            self.live[slot] = (prompt, live)
            readers.append((slot, len(entries) - 1))
        return first, others

    def _advance(self, slot: int, choice: int, logits: torch.Tensor) -> None:
        prompt, live = self.live[slot]
        if prompt.cancelled:
            del self.live[slot]
            return
        forced, before = bool(live.row.queue), len(live.row.tokens)
        token = live.row.step(choice)
        if live.on_token and len(live.row.tokens) > before:
            chosen = live.row.tokens[-1]
            live.on_token(live.row, None if forced else token_probability(logits, chosen))
        if token is None:
            del self.live[slot]
            live.on_done(live.row)
        else:
            self.pending.append((slot, token))
