"""What a completion is asked for (`Sampling`) and what a stream yields (`Token`): plain data, no torch.

Kept apart from the decoding loops so that the kernel and the stages can build a `Sampling` (evaluation, the judge,
the app) without importing torch and transformers at module import.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgedistill.tables import TableTool

# The end of a non-empty `Answer:` line: where a row stops when only the answer is wanted (`stop_after_answer`).
ANSWER_LINE_DONE = re.compile(r"Answer:[^\n]*\S[^\n]*\n")


@dataclass
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    stop_after_answer: bool = True    # stop each row at the end of its Answer: line
    calculator: bool = True
    seed: int = 0
    tables: TableTool | None = None   # the plant's tables: `[[query =>` is filled with its rows (table_queries.py)


@dataclass
class Token:
    """One step of a streamed completion."""
    text: str                    # the completion so far (calculator values filled in)
    probability: float | None    # the model's probability of this token at temperature 1; None: the calculator's
