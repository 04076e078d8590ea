"""Verify and continue: the calculator (and the table tool) for engines that decode in their own loop (a server, vLLM).

Such an engine cannot take the calculator's value in the middle of its decoding, so the calculator works between
requests: the engine writes a completion; we walk its `<<expr=value>>` annotations in order, and at the first whose
value is not the calculator's (or that the token budget cut open) we keep the text up to `=`, append the
calculator's `value>>` and ask the engine to continue from there. The result is the text the model would have
written with the calculator filling in values as it decoded; a model that gets its arithmetic right costs one
request per sample. Shared by openai_api.py and vllm.py, so neither backend imports the other.
"""
from __future__ import annotations

from edgedistill import table_queries
from edgedistill.calculator import ANNOTATION, fill_for
from edgedistill.generation.sampling import ANSWER_LINE_DONE, Sampling

MAX_CONTINUATIONS = 16   # calculator corrections per sample; more means the model has lost the thread


def first_wrong_fill(text: str) -> tuple[int, str] | None:
    """(cut, fill) for the first annotation the calculator disagrees with: keep text[:cut] (up to and including its
    `=`) and append `fill` (`value>>`). An annotation left open at the end counts too; an invalid expression is left
    as the model wrote it, as the in-process decoders do."""
    position = 0
    while True:
        start = text.find("<<", position)
        if start < 0:
            return None
        equals = text.find("=", start)
        if equals < 0:
            return None
        cut = equals + 1
        fill = fill_for(text[:cut])
        closed = ANNOTATION.match(text, start)
        if fill is not None and (closed is None or text[cut:closed.end()] != fill):
            return cut, fill
        position = closed.end() if closed else cut


def extend_with_calculator(text: str, piece: str, sampling: Sampling) -> tuple[str, bool]:
    """One verify-and-continue step: (the text so far, finished?) after the engine wrote `piece` after `text`.
    Not finished when the calculator corrected a value: the text ends with its `value>>`, to be continued."""
    candidate = text + piece
    wrongs = [first_wrong_fill(candidate) if sampling.calculator else None,
              table_queries.first_wrong_fill(candidate, sampling.tables) if sampling.tables is not None else None]
    wrong = min((w for w in wrongs if w is not None), default=None)    # the earlier of the two tools' corrections
    if wrong is None or wrong[0] <= len(text):
        return candidate, True
    text = candidate[:wrong[0]] + wrong[1]                 # continue after the calculator's value
    done = sampling.stop_after_answer and ANSWER_LINE_DONE.search(text + "\n") is not None
    return text, done                                      # a fill that completed the Answer line is enough


def finish(text: str, sampling: Sampling) -> str:
    """The completion as the in-process decoders return it: cut after the Answer line when asked, stripped."""
    return (truncate_after_answer(text) if sampling.stop_after_answer else text).strip()


def truncate_after_answer(text: str) -> str:
    match = ANSWER_LINE_DONE.search(text)
    return text[:match.end()] if match else text
