"""Many users' questions decoded together: the scheduler under the app and its OpenAI-compatible endpoint.

    scheduler = scheduler_for(generator)              # continuous batching on llama.cpp, one question at a time else
    reply = scheduler.submit(messages, [greedy, *samples])
    for token in reply.stream(): ...                  # the first row (the answer the user reads), token by token
    texts = reply.texts()                             # every row's completion, once all have ended
    reply.cancel()                                    # the user left: the rows stop at the next step

On llama.cpp (`ContinuousScheduler`) one thread owns the model and runs `SlotEngine.step` in a loop: every step
advances each busy row by one token and prefills the questions that arrived since, so a question joins the running
batch at once and leaves it when done. A question's rows (its greedy answer and its confidence samples) share one
prefill. On CPUs decoding is compute-bound, so the gain is the work saved as much as the batching: the samples
stop at the end of their answer line and each prompt is prefilled once.

`shared_turns` (the app's system turn): their tokens, which every question starts with, are decoded once and
copied into each question's slot, so a question prefills only its own tokens (26 of about 70 shared on the
quickstart student: the first answer of a lone user 0.16 s -> 0.10 s in-process).

Greedy text: without `shared_turns`, a question alone with no samples streams exactly what the single-row decode
writes (a test checks it). A prompt prefilled in two pieces, or rows sharing a decode with others, get llama.cpp's
batched matmuls, which round differently in the last bits, so a near-tie can go the other way, as in the eval
stage's batches (which also decode a shared prefix once). On the 258 shop-floor held-out questions, greedy and
alone, the system turn decoded once changed 29 answers: 102 right against 93 without it, within chance.

While some row still writes its Answer line, rows already writing reasoning go into every other step
(`answers_first`): the answers people wait for come sooner.

Backends without slots (transformers, ONNX, a server) get `SerialScheduler`: one question at a time under a lock,
its greedy row streamed, then its samples in one batched call, as the app did before batching.
"""
from __future__ import annotations

import atexit
import queue
import threading
import traceback
from collections import deque
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

import torch

from edgedistill import UserError
from edgedistill.generation.base import LiveRow, Prompt, Row, shared_prefix
from edgedistill.generation.decoding import draw_tokens, stream_completion
from edgedistill.generation.sampling import Sampling, Token

SERVE_SLOTS = 32   # rows decoded at once: a question takes 1 + samples of them, its samples only for ~15 tokens
_ENDED = None      # a row's last event


@runtime_checkable
class SlotDecoder(Protocol):
    """A backend that decodes rows in slots of one context (llama.cpp): what continuous batching needs."""
    eos: set

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def prompt_ids(self, messages: list[dict]) -> list[int]: ...
    def check_fits(self, prompt: list[int], max_new_tokens: int, what: str = ...) -> None: ...
    def slot_engine(self, slots: int, choose: Callable, prefix: list[int] = ..., answers_first: bool = ...): ...


class Reply:
    """One question's rows as they decode, read from `events`, a call that blocks for the next (row index, Token,
    or None once that row has ended)."""

    def __init__(self, rows: int, events: Callable[[], tuple[int, Token | None]], cancel: Callable[[], None]):
        self.rows, self._next, self._cancel = rows, events, cancel
        self._texts: list[str] = [""] * rows
        self._ended: set[int] = set()

    def _pump(self) -> tuple[int, Token | None]:
        row, token = self._next()
        if token is _ENDED:
            self._ended.add(row)
        else:
            self._texts[row] = token.text
        return row, token

    def stream(self) -> Iterator[Token]:
        """Row 0, token by token (other rows' events are kept for `texts`)."""
        while 0 not in self._ended:
            row, token = self._pump()
            if row == 0 and token is not _ENDED:
                yield token

    def texts(self) -> list[str]:
        """Every row's completion, stripped, once all have ended."""
        while len(self._ended) < self.rows:
            self._pump()
        return [text.strip() for text in self._texts]

    def cancel(self) -> None:
        self._cancel()


class SerialScheduler:
    """One question at a time: its greedy row streamed (a single-row decode where the backend has one), then its
    samples in one batched call with the first sample's settings."""

    def __init__(self, generator):
        self.generator = generator
        self.lock = threading.Lock()

    def submit(self, messages: list[dict], samplings: list[Sampling]) -> Reply:
        check_fits = getattr(self.generator, "check_fits", None)
        if check_fits is not None and hasattr(self.generator, "prompt_ids"):
            ids = self.generator.prompt_ids(messages)
            for sampling in samplings:
                check_fits(ids, sampling.max_new_tokens)
        stop = threading.Event()
        events = self._events(messages, samplings, stop)

        def cancel() -> None:
            """From any thread: a decode running in another thread stops at its next token; one suspended between
            tokens (its reader left) is closed here, which releases the lock for the next question."""
            stop.set()
            try:
                events.close()
            except ValueError:     # "generator already executing": the thread running it sees `stop`
                pass
        return Reply(len(samplings), lambda: next(events), cancel)

    def _events(self, messages, samplings, stop: threading.Event):
        with self.lock:
            for token in stream_completion(self.generator, messages, samplings[0]):
                if stop.is_set():
                    raise UserError("the question was cancelled: its client left")
                yield 0, token
            yield 0, _ENDED
            if len(samplings) > 1:
                texts = self.generator.generate([messages] * (len(samplings) - 1), samplings[1],
                                                batch_size=len(samplings) - 1)
                for row, text in enumerate(texts, 1):
                    yield row, Token(text, None)
                    yield row, _ENDED


class ContinuousScheduler:
    """Continuous batching on a slot decoder: requests queue here, one thread runs the decode loop."""

    def __init__(self, generator: SlotDecoder, slots: int = SERVE_SLOTS, shared_turns: Sequence[dict] = ()):
        self.generator, self.slots = generator, slots
        self.prefix = turns_prefix(generator, shared_turns) if shared_turns else []
        self.waiting: deque[Prompt] = deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.steps = self.rows_decoded = 0    # decodes run, and rows they advanced: rows per step is the batching
        self.thread = threading.Thread(target=self._loop, name="edgedistill-decoder", daemon=True)
        self.thread.start()
        atexit.register(self.close)   # a decode still running while the interpreter frees llama.cpp aborts it

    def close(self) -> None:
        """Stop the decode loop after its current step; questions still waiting are not answered."""
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=60)

    def submit(self, messages: list[dict], samplings: list[Sampling]) -> Reply:
        if self.stopping or not self.thread.is_alive():
            raise UserError("the app is shutting down: ask again once it has restarted")
        if len(samplings) > self.slots:
            raise UserError(f"{len(samplings)} rows for one question; this app decodes {self.slots} at once: "
                            f"ask for fewer samples")
        ids = self.generator.prompt_ids(messages)
        for sampling in samplings:
            self.generator.check_fits(ids, sampling.max_new_tokens)
        events: queue.Queue = queue.Queue()

        def row(index: int, sampling: Sampling) -> LiveRow:
            """Row 0 streams token by token (with its probabilities); the samples say only their final text, so
            the decode loop spends nothing on them between tokens."""
            def done(r: Row) -> None:
                if index:
                    events.put((index, Token(r.text, None)))
                events.put((index, _ENDED))
            return LiveRow(Row(sampling, self.generator.decode, self.generator.encode, self.generator.eos),
                           on_done=done, on_token=None if index else lambda r, p: events.put((0, Token(r.text, p))),
                           generator=torch.Generator().manual_seed(sampling.seed))
        prompt = Prompt(ids, [row(i, s) for i, s in enumerate(samplings)], fail=lambda exc: events.put((-1, exc)))
        with self.wake:
            self.waiting.append(prompt)
            self.wake.notify()

        def next_event():
            index, item = events.get()
            if index < 0:
                raise UserError(f"the model failed while answering ({type(item).__name__}: {item})")
            return index, item
        return Reply(len(samplings), next_event, lambda: setattr(prompt, "cancelled", True))

    def _loop(self) -> None:
        engine = self.generator.slot_engine(self.slots, choose_each_row, self.prefix, answers_first=True)
        while True:
            with self.wake:
                while not self.waiting and not engine.busy() and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
            try:
                self.rows_decoded += engine.step(self.waiting)
                self.steps += 1
            except Exception as exc:   # every request in flight hears of it; the loop goes on
                traceback.print_exc()
                for prompt in {id(p): p for p, _ in engine.live.values()}.values():
                    prompt.fail(exc)
                engine = self.generator.slot_engine(self.slots, choose_each_row, self.prefix, answers_first=True)


def choose_each_row(logits: torch.Tensor, rows: list[LiveRow]) -> list[int]:
    """Each row by its own sampling and random stream, so a greedy answer and its samples decode side by side; the
    rows sampled alike are drawn in one batched pass (one uniform from each row's own stream)."""
    chosen = logits.argmax(-1).tolist()
    alike: dict[tuple[float, float], list[int]] = {}
    for i, live in enumerate(rows):
        if live.row.sampling.temperature > 0:
            alike.setdefault((live.row.sampling.temperature, live.row.sampling.top_p), []).append(i)
    for group in alike.values():
        uniform = torch.cat([torch.rand(1, 1, generator=rows[i].generator, dtype=torch.float64) for i in group])
        for i, token in zip(group, draw_tokens(logits[group], rows[group[0]].row.sampling, uniform)):
            chosen[i] = token
    return chosen


def turns_prefix(generator: SlotDecoder, turns: Sequence[dict]) -> list[int]:
    """The prompt tokens every conversation opening with `turns` starts with (the template's user header
    included): the common prefix of two such conversations. A question whose tokens do not start with it (a
    tokenizer merging across the boundary) is prefilled whole, so this is never wrong, only sometimes unused."""
    return shared_prefix([generator.prompt_ids([*turns, {"role": "user", "content": text}])
                          for text in ("How many parts?", "Which one failed?")])


def scheduler_for(generator, slots: int = SERVE_SLOTS, shared_turns: Sequence[dict] = ()
                  ) -> SerialScheduler | ContinuousScheduler:
    """Continuous batching where the backend decodes in slots (`shared_turns`, such as the system turn, decoded
    once for all questions), one question at a time elsewhere."""
    if isinstance(generator, SlotDecoder):
        return ContinuousScheduler(generator, slots=slots, shared_turns=shared_turns)
    return SerialScheduler(generator)
