"""The eval stage's one result cache around the kernel's one evaluation (`edgedistill.metrics.evaluate`).

`evaluate_cached` runs the evaluation of a model on a set of questions with the stage's settings (`EvalConfig`) and
stores the result as JSON with its key; while the key is the same the stored result is reused and the model is not
even loaded. The comparison report (`edgedistill eval --out`) and the run's eval stage (evals/run.py) both go through
it, so an interrupted comparison or run resumes where it stopped.

    key   sha256 of the model's fingerprint (the contents of its files; a packaged model's pinned sha256; else its
          name: a hub id, a server), the backend asked for, every question (with where it came from), the worked
          examples, the evaluation settings (`evaluation_options`) and the seed. Not the decoding threads, nor
          anything else that does not change a result.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgedistill.config import EvalConfig
from edgedistill.datasets import where_of
from edgedistill.metrics import evaluate
from edgedistill.records import Question, read_json_object, write_json_atomic
from edgedistill.rundir import fingerprint
from edgedistill.evals.crosscheck import crosscheck as cross_check
from edgedistill.results import EvalResult

# written into a model's folder by the eval (its calibration) and the export (its parity report): not the model
NOT_THE_MODEL = {"calibration.json", "parity.json"}


def model_fingerprint(spec: str) -> str:
    """What a model's results depend on: a packaged model's pinned sha256; a file's sha256; a folder's files (name
    and sha256 each, less NOT_THE_MODEL and hidden files); else the spec itself (a hub id, a server URL)."""
    from edgedistill.models import PACKAGED, content_sha256
    spec = str(spec)
    if spec in PACKAGED:
        return PACKAGED[spec].sha256
    path = Path(spec).expanduser()
    if path.is_file():
        return content_sha256(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.name not in NOT_THE_MODEL
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        return fingerprint([[f.relative_to(path).as_posix(), content_sha256(f)] for f in files])
    return spec


class Model:
    """A model to evaluate, named by its spec (anything `load_generator` takes); loaded on first use and once, so a
    model whose every result is cached is never loaded."""

    def __init__(self, spec: str | Path, *, backend: str = "auto", allow_network: bool = False,
                 threads: int | None = None):
        self.spec, self.backend, self.allow_network, self.threads = str(spec), backend, allow_network, threads
        self.load_seconds = 0.0
        self._generator = None
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.spec)
        return self._fingerprint

    def generator(self):
        if self._generator is None:
            from edgedistill.generation import load_generator
            started = time.time()
            self._generator = load_generator(self.spec, self.allow_network, backend=self.backend, threads=self.threads)
            self.load_seconds = round(time.time() - started, 1)
        return self._generator


def open_named_tables(named: list[str]):
    """The table tool the evaluation's queries run on (None when no tables are named)."""
    if not named:
        return None
    from edgedistill.tables import open_tables
    return open_tables(named)


def with_schema(questions: list[Question], tables, value_hints: bool = False,
                name_hints: bool = False) -> list[Question]:
    """Table questions as the app asks them (tables.as_served)."""
    from edgedistill.tables import as_served
    return as_served(questions, tables, value_hints, name_hints)


def evaluation_options(settings: EvalConfig, *, k: int | None = None) -> dict:
    """The keywords of `metrics.evaluate` that the stage's settings give (k: settings.samples unless given)."""
    return {"k": settings.samples if k is None else k, "temperature": settings.temperature,
            "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size,
            "calculator_row": settings.calculator_row, "end_subset": settings.end_subset,
            "end_tokens": settings.end_tokens}


def result_key(model: Model, questions: list[Question], *, options: dict, shots=(), seed: int = 0) -> str:
    return fingerprint(model.fingerprint, model.backend, [dataclasses.asdict(q) for q in questions],
                       where_of(questions), [[dataclasses.asdict(q), target] for q, target in shots], options, seed)


def evaluate_cached(model: Model, questions: list[Question], *, cache: Path | None, settings: EvalConfig,
                    k: int | None = None, shots: list[tuple[Question, str]] = (), seed: int = 0,
                    label: str = "eval", fields: dict | None = None, crosscheck: bool = False,
                    announce: bool = False, tables=None) -> EvalResult:
    """`metrics.evaluate` of `model` on `questions` with `settings` (k: its samples unless given), stored at
    `cache` and reused from there while its key is the same (None: neither stored nor reused). The result also holds model_spec, backend,
    load_seconds, `fields` (names, data labels) and, with `crosscheck`, the math-verify cross-check of its rows.
    `announce`: print the pass@1 of a result just computed (a reused one is always named). `tables`: the table
    tool the model's queries run on (the questions carry the tables' schema, so the key follows them)."""
    options = evaluation_options(settings, k=k)
    key = result_key(model, questions, options=options, shots=shots, seed=seed)
    stored = read_json_object(cache) if cache is not None else {}
    if stored.get("key") == key:
        try:
            reused = EvalResult.from_dict(stored)
            print(f"[eval] {label}: reusing {cache}", flush=True)
            return reused
        except (KeyError, TypeError, ValueError, AttributeError):   # a stored result edited or cut short: again
            print(f"[eval] {label}: {cache} is not a readable result; evaluating again", flush=True)
    generator = model.generator()
    result = evaluate(generator, questions, shots=shots, seed=seed, label=label, tables=tables, **options)
    result = dataclasses.replace(result, model_spec=model.spec, backend=getattr(generator, "backend", "?"),
                                 load_seconds=model.load_seconds, **(fields or {}), key=key)
    if crosscheck:
        result.crosscheck = cross_check(result.rows)
    if cache is not None:
        write_json_atomic(cache, result.to_dict())
    if announce:
        left_out = f", {result.skipped} questions skipped (too long)" if result.skipped else ""
        print(f"[eval] {label}: pass@1 {result.pass_at_1:.1%} ({result.seconds} s){left_out}", flush=True)
    return result
