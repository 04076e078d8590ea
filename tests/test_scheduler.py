"""The scheduler under the app: questions from many users decode together on llama.cpp (continuous batching,
one prefill per question for its answer and its samples), a question alone streams exactly what the single-row
decode writes, a user who leaves frees the batch, and a failed decode is told to the users in it."""
import threading
from collections import deque

import pytest

from edgedistill import UserError
from edgedistill.formats import chat
from edgedistill.generation import Sampling
from edgedistill.generation.decoding import stream_completion
from edgedistill.serve.scheduler import ContinuousScheduler, SerialScheduler, scheduler_for

QUESTIONS = ["A pallet holds 24 boxes of 36 bolts. How many bolts are on 5 pallets?",
             "Line 3 makes 48 housings an hour. How many housings in a 7.5-hour shift?",
             "A pump moves 120 litres a minute. How many minutes to fill a 4200-litre tank?",
             "Which sensor shows a bearing fault first?", "What is 6 times 7?", "Name a failure mode of a valve."]
GREEDY = Sampling(max_new_tokens=40, stop_after_answer=False)
SAMPLES = [Sampling(max_new_tokens=24, temperature=0.7, seed=1 + i) for i in range(4)]


@pytest.fixture(scope="module")
def gguf():
    from edgedistill.models import resolve
    return str(resolve("smollm2-135m-instruct").path)


@pytest.fixture(scope="module")
def scheduler(gguf):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    scheduler = scheduler_for(LlamaCppGenerator(gguf))
    yield scheduler
    scheduler.close()


def test_llama_cpp_gets_continuous_batching_and_others_one_at_a_time(scheduler):
    assert isinstance(scheduler, ContinuousScheduler)
    assert isinstance(scheduler_for(object()), SerialScheduler)


def test_a_question_alone_streams_what_the_single_row_decode_writes(scheduler, gguf):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    single = LlamaCppGenerator(gguf)     # a context of its own: the scheduler's belongs to its thread
    for question in QUESTIONS[:3]:
        alone = [t.text for t in stream_completion(single, chat(question), GREEDY)]
        streamed = [t.text for t in scheduler.submit(chat(question), [GREEDY]).stream()]
        assert streamed == alone


def test_the_shared_system_turn_is_prefilled_once_not_per_question(gguf):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    generator = LlamaCppGenerator(gguf)
    decoded = []     # tokens of each llama_decode call
    original = generator._decode
    generator._decode = lambda ctx, entries: (decoded.append(len(entries)), original(ctx, entries))[1]
    scheduler = scheduler_for(generator, shared_turns=chat("")[:1])
    try:
        for question in QUESTIONS[:2]:     # one token each: a decode call is a prefill
            assert scheduler.submit(chat(question), [Sampling(max_new_tokens=1)]).texts()[0]
        shared = len(scheduler.prefix)
        assert shared >= 16
        assert decoded == [shared, *(len(generator.prompt_ids(chat(q))) - shared for q in QUESTIONS[:2])]
    finally:
        scheduler.close()


def test_questions_from_many_users_decode_together(scheduler):
    steps, rows = scheduler.steps, scheduler.rows_decoded
    replies = {}

    def user(i, question):
        replies[i] = scheduler.submit(chat(question), [GREEDY, *SAMPLES]).texts()
    threads = [threading.Thread(target=user, args=(i, q)) for i, q in enumerate(QUESTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(replies) == list(range(len(QUESTIONS)))
    assert all(len(texts) == 5 and all(texts) for texts in replies.values())
    rows_per_step = (scheduler.rows_decoded - rows) / (scheduler.steps - steps)
    assert rows_per_step > 4          # 6 questions x 5 rows: most decodes carried many rows at once


def test_a_user_who_leaves_frees_the_batch(scheduler):
    reply = scheduler.submit(chat(QUESTIONS[0]), [Sampling(max_new_tokens=300, stop_after_answer=False)])
    stream = reply.stream()
    next(stream), next(stream)
    steps = scheduler.steps
    reply.cancel()
    after = scheduler.submit(chat(QUESTIONS[1]), [GREEDY]).texts()
    assert after[0] and scheduler.steps - steps < 80      # the 300-token row did not run on


def test_reasoning_rows_wait_every_other_step_while_an_answer_is_being_written(scheduler, gguf):
    """answers_first: a row past its Answer line goes into every other decode while another row writes its own."""
    from edgedistill.generation.base import LiveRow, Prompt, Row
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.serve.scheduler import choose_each_row
    model = LlamaCppGenerator(gguf)
    engine = model.slot_engine(4, choose_each_row, answers_first=True)
    long = Sampling(max_new_tokens=200, stop_after_answer=False)

    def row():
        return LiveRow(Row(long, model.decode, model.encode, model.eos), on_done=lambda r: None)
    reasoning, answering = row(), row()
    waiting = deque([Prompt(model.prompt_ids(chat(QUESTIONS[0])), [reasoning])])
    engine.step(waiting)
    reasoning.row.answered = True           # as if its Answer line were written: the rest is reasoning
    for _ in range(4):                      # alone, it goes on every step
        engine.step(waiting)
    assert len(reasoning.row.tokens) == 5
    waiting.append(Prompt(model.prompt_ids(chat(QUESTIONS[1])), [answering]))
    for _ in range(10):
        engine.step(waiting)
    assert len(answering.row.tokens) == 10 and len(reasoning.row.tokens) == 5 + 5


class FailingOnce:
    """A slot decoder whose first decode fails, then works: one row, three tokens."""
    def __init__(self):
        self.failed, self.eos = False, {0}

    def prompt_ids(self, messages):
        return [1]

    def check_fits(self, prompt, max_new_tokens, what="the prompt"):
        pass

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def slot_engine(self, slots, choose, prefix=(), answers_first=False):
        decoder = self

        class Engine:
            live = {}

            def busy(self):
                return bool(self.live)

            def step(self, waiting: deque):
                prompt = waiting.popleft()
                if not decoder.failed:
                    decoder.failed = True
                    self.live = {0: (prompt, prompt.rows[0])}
                    raise RuntimeError("decode failed (code 1)")
                for ch in "ok":
                    prompt.rows[0].row.step(ord(ch))
                    prompt.rows[0].on_token(prompt.rows[0].row, None)
                prompt.rows[0].on_done(prompt.rows[0].row)
                return 1
        return Engine()


def test_a_failed_decode_is_told_to_its_users_and_the_next_question_is_answered():
    scheduler = ContinuousScheduler(FailingOnce())
    with pytest.raises(UserError, match="decode failed"):
        scheduler.submit([], [GREEDY]).texts()
    assert scheduler.submit([], [GREEDY]).texts() == ["ok"]
    scheduler.close()


def test_making_a_context_leaves_the_processs_stdout_and_stderr_alone(gguf, monkeypatch):
    """The decoder thread makes its contexts while the main thread prints the banner and other threads their
    tracebacks: llama_cpp's suppress_stdout_stderr swapped sys.stdout/stderr (and fds 1, 2) for /dev/null meanwhile,
    and two overlapping calls left them there for good (a server with --auth printed nothing at all)."""
    import sys
    import llama_cpp
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    generator = LlamaCppGenerator(gguf)      # loading the model may silence itself: no thread runs yet
    original, out, err, seen = llama_cpp.llama_init_from_model, sys.stdout, sys.stderr, []

    def watched(*args):
        seen.append((sys.stdout is out, sys.stderr is err))
        return original(*args)

    monkeypatch.setattr(llama_cpp, "llama_init_from_model", watched)
    generator.generate([chat(QUESTIONS[4])], Sampling(max_new_tokens=4), batch_size=2)
    generator.close()
    assert seen and all(both == (True, True) for both in seen)
