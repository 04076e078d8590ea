"""An evaluation's result as a typed record, and the names of its figures in JSON, written once (the gguf-py
`constants.py` habit). The kernel's evaluation (`metrics.evaluate`) returns an `EvalResult`; the CLI, the
comparison, the eval stage, the report, the plots, the export's parity report and the student's dev evaluation read
its fields, never a string key.

    result = evaluate(generator, questions, k=4)
    result.pass_at_1, result.ci95, result.pass_at_k, result.maj_at_k, result.rows[0].correct

Results travel as JSON (the stage's cache, report.json): `to_dict` writes the names below (`pass@1`, `pass@4`,
`maj@4`, ...), the same names earlier versions wrote, so stored results and reports stay readable, and `from_dict`
reads them back.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

PASS_AT_1 = "pass@1"
PASS_AT_1_NO_CALCULATOR = "pass@1_no_calculator"      # greedy, the model's own numbers where it wrote <<expr=
PASS_AT_1_AT_DELIMITER = "pass@1_at_delimiter"        # the end-subset: stopped at the end of the Answer line
PASS_AT_1_FULL_TEXT = "pass@1_full_text"              # the end-subset: decoded to the end
CI95 = "ci95"                                         # the Wilson interval of pass@1
MAJ_CI95 = "maj_ci95"
ROWS = "rows"                                         # one per question: id, prediction, correct, agreement, ...


def pass_at(k: int) -> str:
    """The JSON name of the unbiased pass@k of k sampled answers."""
    return f"pass@{k}"


def maj_at(k: int) -> str:
    """The JSON name of the majority vote of k sampled answers."""
    return f"maj@{k}"


@dataclass
class ResultRow:
    """One question scored: the greedy answer (`predicted`, read from `text`), whether it is right, and, with k > 1,
    how many of the k sampled answers agree with it and their Answer lines."""
    id: str
    reference: Any
    predicted: Any
    correct: bool
    topic: str = ""
    answer_type: str = "number"
    agreement: int | None = None
    sampled: list[str] | None = None
    text: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> ResultRow:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


# Figures every result has ({attribute: JSON name}); the optional ones below are written only where measured (k > 1,
# a no-calculator pass) or known (where it came from).
_ALWAYS = {"n": "n", "k": "k", "shots": "shots", "correct": "correct", "pass_at_1": PASS_AT_1, "ci95": CI95,
           "tokens_to_answer": "tokens_to_answer", "seconds_to_answer": "seconds_to_answer", "topics": "topics",
           "skipped": "skipped", "skipped_questions": "skipped_questions"}
_OPTIONAL = {"maj_ci95": MAJ_CI95, "temperature": "temperature", "pass_at_1_no_calculator": PASS_AT_1_NO_CALCULATOR,
             "ci95_no_calculator": "ci95_no_calculator", "to_the_end": "to_the_end", "seconds": "seconds",
             "seconds_per_question": "seconds_per_question", "model": "model", "data": "data",
             "data_spec": "data_spec", "model_spec": "model_spec", "backend": "backend",
             "load_seconds": "load_seconds", "key": "key", "crosscheck": "crosscheck"}


@dataclass
class EvalResult:
    """Everything measured of one model on one set of questions (`metrics.evaluate`), and where it came from.

    `figures` holds what only some results carry, under their JSON names: the calibration of the app's confidence
    (ece, brier, ece_raw, brier_raw, reliability, reliability_raw), the scores of a closed label set (accuracy,
    macro_f1, macro_f1_ci95) and the confidence judged on these questions (likely_right_*, precision_coverage)."""
    n: int                                   # questions scored (skipped ones not counted)
    correct: int                             # greedy answers right
    pass_at_1: float
    ci95: list[float]                        # the Wilson interval of pass@1
    k: int = 1                               # sampled answers per question (0 or 1: greedy only)
    shots: int = 0
    pass_at_k: float | None = None           # unbiased pass@k of the k samples (k > 1)
    maj_at_k: float | None = None            # their majority vote (k > 1)
    maj_ci95: list[float] | None = None
    temperature: float | None = None
    pass_at_1_no_calculator: float | None = None
    ci95_no_calculator: list[float] | None = None
    tokens_to_answer: float | None = None
    seconds_to_answer: float | None = None   # greedy, batched, per question
    seconds: float | None = None             # the whole evaluation's wall time
    seconds_per_question: float | None = None
    topics: dict[str, dict] = field(default_factory=dict)       # topic: {n, pass@1}
    skipped: int = 0                         # questions too long for the model's context
    skipped_questions: list[dict] = field(default_factory=list)
    to_the_end: dict | None = None           # the end subset (metrics.to_the_end)
    rows: list[ResultRow] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    # where it came from: set by the eval stage's cache and the comparison
    model: str | None = None
    data: str | None = None
    data_spec: str | None = None
    model_spec: str | None = None
    backend: str | None = None
    load_seconds: float | None = None
    key: str | None = None
    crosscheck: dict | None = None

    def figure(self, name: str, default=None):
        """A figure only some results carry (see the class docstring), by its JSON name."""
        return self.figures.get(name, default)

    def to_dict(self, *, rows: bool = True) -> dict:
        """The JSON form (the names above); `rows=False` leaves the per-question rows out (report.json)."""
        record = {name: getattr(self, attribute) for attribute, name in _ALWAYS.items()}
        if self.pass_at_k is not None:
            record[pass_at(self.k)] = self.pass_at_k
        if self.maj_at_k is not None:
            record[maj_at(self.k)] = self.maj_at_k
        record.update({name: getattr(self, attribute) for attribute, name in _OPTIONAL.items()
                       if getattr(self, attribute) is not None})
        record.update(self.figures)
        if rows:
            record[ROWS] = [row.to_dict() for row in self.rows]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> EvalResult:
        """A result read back from its JSON form; a name it does not know goes to `figures`."""
        k = 1 if record.get("k") is None else int(record["k"])    # 0: greedy only, as stored
        names = {**_ALWAYS, **_OPTIONAL}
        known = {attribute: record[name] for attribute, name in names.items() if record.get(name) is not None}
        known.update(n=record["n"], pass_at_1=record[PASS_AT_1], k=k,
                     pass_at_k=record.get(pass_at(k)) if k > 1 else None,
                     maj_at_k=record.get(maj_at(k)) if k > 1 else None,
                     rows=[ResultRow.from_dict(row) for row in record.get(ROWS) or []])
        known.setdefault("correct", 0)
        known.setdefault("ci95", [0.0, 0.0])
        taken = set(names.values()) | {ROWS, pass_at(k), maj_at(k)}
        figures = {name: value for name, value in record.items() if name not in taken
                   and not re.fullmatch(r"(pass|maj)@\d+", name)}
        return cls(**known, figures=figures)
