"""Fuzzing hostile input: configs, data lines, calculator expressions and command-line paths.

The property everywhere: an input ends in success or in one clear error (a UserError; exit code 2 and one line
on the command line); never another exception, never a hang over a few seconds, never a change to a file the
command was not asked to write. Config fuzzing runs the loader and the pipeline's pre-flight checks in-process,
never a training run.

Profiles: `fast` (default, bounded examples, part of `make test`) and `long` (a nightly-style run):
    EDGEDISTILL_FUZZ=long EDGEDISTILL_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py \
        --hypothesis-show-statistics
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import re
import signal
import string
import typing
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedistill import UserError, calculator
from edgedistill.cli import main
from edgedistill.config import Config, load_config
from edgedistill.pipeline import preflight
from edgedistill.records import AppendLog, load_questions

settings.register_profile("fast", max_examples=60, deadline=timedelta(seconds=5), derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=int(os.environ.get("EDGEDISTILL_FUZZ_EXAMPLES", "20000")),
                          deadline=timedelta(seconds=5),
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = os.environ.get("EDGEDISTILL_FUZZ", "fast")
settings.load_profile(PROFILE)


HANG_SECONDS = 60


@contextmanager
def alarm(seconds: int):
    """Fail with TimeoutError if the block runs longer than `seconds`: a hang, not a slow first import."""
    def hang(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `folder` except under `skip`: what a command must leave as it was."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip and (p == skip or skip in p.parents))}


# ---- configs: every field, values across types and ranges --------------------------------------------------

def config_fields(cls=Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every leaf field of the config, nested sections flattened."""
    hints, found = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += config_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            found.append((f"{prefix}{f.name}", f))
    return found


LEAVES = config_fields()
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["", " ", "0", "-1", "1e-3", ".nan", "x" * 300]),
    st.text(max_size=20))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))


@st.composite
def field_value(draw, dotted: str, f: dataclasses.Field):
    """A value for one field: sometimes an allowed one (so later checks are reached), mostly anything."""
    rules = f.metadata.get("rules", {})
    allowed = [*rules.get("choices", ()), *([list(rules["each"][:1])] if "each" in rules else [])]
    for bound in ("low", "above", "high"):
        if bound in rules:
            allowed += [rules[bound], rules[bound] + 1, rules[bound] - 1]
    if f.default is not dataclasses.MISSING:
        allowed.append(f.default)
    return draw(st.sampled_from(allowed)) if allowed and draw(st.booleans()) else draw(VALUES)


@st.composite
def config_dicts(draw):
    body: dict = {}
    for dotted, f in draw(st.lists(st.sampled_from(LEAVES), max_size=6, unique_by=lambda x: x[0])):
        node = body
        *sections, key = dotted.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = draw(field_value(dotted, f))
    if draw(st.integers(0, 9)) == 0:   # an unknown key, or a section that is not a mapping
        body[draw(st.sampled_from(["student", "studnet", "data", "zzz"]))] = draw(VALUES)
    return body


@given(body=config_dicts())
def test_fuzz_config_values_end_in_a_config_or_one_clear_error(tmp_path_factory, body):
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    before = snapshot(folder)
    try:
        preflight(load_config(path), folder / "run")
    except UserError as exc:
        assert str(exc).strip()
    assert snapshot(folder, skip=folder / "run") == before


@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.sampled_from([b"[" * 5000, b"a: &x [*x]", b"\xff\xfe", b"student: !!python/object:os.system x",
                                      b"- 1\n- 2", b"student:\n  epochs: 1e400"])))
def test_fuzz_raw_config_text_ends_in_a_config_or_one_clear_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("raw") / "config.yaml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except UserError as exc:
        assert str(exc).strip()
    assert path.read_bytes() == raw


# ---- data lines: JSON shapes, encodings, sizes ------------------------------------------------------------

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64), st.floats(), st.text(max_size=30)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
QUESTION_KEYS = ["id", "question", "answer", "answer_type", "options", "rationale", "answer_expr", "topic", "source"]
RECORDS = st.dictionaries(st.sampled_from(QUESTION_KEYS), st.one_of(JSON, st.sampled_from(
    ["How many bolts?", "42", "1,200", "number", "choice", "48*7.5", "48*", "sqrt(-1)", "#### 7", ["a", "b"]])),
    max_size=6)
LINES = st.one_of(RECORDS.map(lambda r: __import__("json").dumps(r).encode()),
                  JSON.map(lambda r: __import__("json").dumps(r).encode()),
                  st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
                  st.sampled_from([b'{"question": "q", "answer": ' + b"9" * 5000 + b"}", b"[" * 3000,
                                   b'{"question": "q", "answer": 1e999}', "{\"question\": \"caf\xe9\"}".encode("latin-1")]))


@given(lines=st.lists(LINES, max_size=5), newline_at_end=st.booleans())
def test_fuzz_data_lines_load_or_name_the_file_and_line(tmp_path_factory, lines, newline_at_end):
    path = tmp_path_factory.mktemp("data") / "seeds.jsonl"
    raw = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    path.write_bytes(raw)
    try:
        questions = load_questions(path, need_answers=False)
    except UserError as exc:
        assert str(path) in str(exc)
    else:
        assert all(isinstance(q.question, str) and q.question.strip() for q in questions)
        assert all(q.answer is None or isinstance(q.answer, str) for q in questions)
    assert path.read_bytes() == raw


@given(content=st.one_of(st.binary(max_size=200), st.lists(LINES, max_size=4).map(b"\n".join)))
def test_fuzz_append_log_never_loses_bytes(tmp_path_factory, content):
    """Opened on any file, the log either refuses it untouched, or keeps every byte (a torn tail goes to .torn)."""
    folder = tmp_path_factory.mktemp("log")
    path = folder / "feedback.jsonl"
    path.write_bytes(content)
    try:
        AppendLog(path, key="id")
    except UserError:
        assert path.read_bytes() == content
        return
    after, torn = path.read_bytes(), (folder / "feedback.jsonl.torn")
    kept = after + (torn.read_bytes()[:-1] if torn.exists() else b"")
    assert kept in (content, content + b"\n")


# ---- calculator: generated expressions against a reference value, and raw strings --------------------------

def _number():
    # three-digit integers get their own branch: `max(10,250)` is where a thousands-separator rule goes wrong
    return st.one_of(st.integers(0, 99).map(lambda n: (str(n), float(n))),
                     st.integers(100, 999).map(lambda n: (str(n), float(n))),
                     st.integers(1000, 99999).map(lambda n: (str(n), float(n))),
                     st.tuples(st.integers(0, 999), st.integers(1, 99)).map(
                         lambda p: (f"{p[0]}.{p[1]:02d}", float(f"{p[0]}.{p[1]:02d}"))))


def _combine(children):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "/": lambda a, b: a / b, " x ": lambda a, b: a * b}
    # `x` is multiplication only between a number or `)` and a number or `(`: the right side is bracketed
    binary = st.tuples(children, st.sampled_from(sorted(ops)), children).map(
        lambda t: (f"({t[0][0]}{t[1]}{t[2][0] if t[1] != ' x ' else '(' + t[2][0] + ')'})",
                   _safe(ops[t[1]], t[0][1], t[2][1])))
    calls = st.tuples(st.sampled_from(["max", "min"]), st.lists(children, min_size=2, max_size=4),
                      st.sampled_from([",", ", "])).map(
        lambda t: (f"{t[0]}({t[2].join(c[0] for c in t[1])})",
                   _safe(lambda *v: max(v) if t[0] == "max" else min(v), *[c[1] for c in t[1]])))
    unary = st.tuples(st.sampled_from(["abs", "floor", "ceil", "sqrt", "-"]), children).map(
        lambda t: (f"{t[0]}({t[1][0]})", _safe({"abs": abs, "floor": math.floor, "ceil": math.ceil,
                                                  "sqrt": math.sqrt, "-": lambda v: -v}[t[0]], t[1][1])))
    return st.one_of(binary, calls, unary)


def _safe(fn, *args):
    """The reference value, or None where the calculator must refuse: division by zero, a math domain error, a
    value past its magnitude limit, or an input that was already refused."""
    if any(a is None for a in args):
        return None
    try:
        value = fn(*args)
    except (ArithmeticError, ValueError):
        return None
    ok = isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= calculator.MAX_MAGNITUDE
    return float(value) if ok else None


EXPRESSIONS = st.recursive(_number(), _combine, max_leaves=6)


@given(expression=EXPRESSIONS)
def test_fuzz_calculator_value_is_the_expressions_value_or_refused(expression):
    """Never silently wrong, never refusing a well-formed expression whose value is in range."""
    text, reference = expression
    try:
        value = calculator.evaluate(text)
    except calculator.CalculatorError as exc:
        assert reference is None, f"{text!r} = {reference}, but the calculator refused it: {exc}"
        return
    assert reference is not None, f"{text!r} has no value, the calculator gave {value}"
    assert math.isclose(value, reference, rel_tol=1e-9, abs_tol=1e-9), f"{text!r}: {value} != {reference}"


RAW_EXPRESSIONS = st.one_of(
    st.text(alphabet=string.digits + "+-*/%().,x× eE_abcfghijlmnoqrstuvw^!=<>", max_size=60),
    st.text(max_size=60),
    st.sampled_from(["0x10", "0b101", "0o17", "1_000", "sqrt(-1)", "floor(1e308*10)", "9**9**9", "(" * 150,
                     "round(1.5, 10**9)", "max()", "ceil(-0.0)", "1e308*1e308", "2**-1074"]))


@given(text=RAW_EXPRESSIONS)
def test_fuzz_calculator_raw_text_never_escapes(text):
    try:
        value = calculator.evaluate(text)
    except calculator.CalculatorError:
        value = None
    else:
        assert math.isfinite(value)
    filled = calculator.fill_for(f"Answer: <<{text}=")
    assert filled is None or filled.endswith(">>")
    assert isinstance(calculator.check_annotations(f"So <<{text}=7>> parts."), list)


def test_fuzz_suite_finds_the_comma_regression(monkeypatch):
    """Planted regression: the thousands-separator rule eating argument commas again must be caught."""
    fixed = calculator.evaluate
    monkeypatch.setattr(calculator, "evaluate",
                        lambda expr: fixed(re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", expr)))
    with pytest.raises(Exception) as caught:   # an AssertionError, or a group of them (distinct failures)
        test_fuzz_calculator_value_is_the_expressions_value_or_refused()
    found = getattr(caught.value, "exceptions", [caught.value])
    assert all(isinstance(exc, AssertionError) for exc in found), found


# ---- command-line paths -----------------------------------------------------------------------------------

PATH_KINDS = ["missing", "folder", "empty", "binary", "under-a-file", "proc", "garbage-jsonl", "bad-config",
              "config-bad-data", "odd-name"]


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def hostile_path(root: Path, kind: str) -> Path:
    """A path of one hostile kind, made under `root` (files the command may read but must not change)."""
    name = root / f"{kind}-{len(list(root.iterdir()))}.x"
    made = {"missing": lambda: name, "folder": lambda: _folder(name), "empty": lambda: _written(name, b""),
            "binary": lambda: _written(name, bytes(range(256))),
            "garbage-jsonl": lambda: _written(name, b'{"question": "q", "answer": "1"}\nnot json\n'),
            "bad-config": lambda: _written(name, b"student:\n  epochs: -1\n"),
            "under-a-file": lambda: _written(name, b"x") / "below",
            "proc": lambda: Path("/proc/edgedistill-fuzz"),
            "config-bad-data": lambda: _written(name, f"data:\n  train: {_written(root / 'bad.jsonl', b'{}')}\n"
                                                      .encode()),
            "odd-name": lambda: root / "ünï cøde\t$(x);.gguf"}
    return made[kind]()


@given(command=st.sampled_from(["run", "teach", "train", "eval", "export", "serve"]),
       model=st.sampled_from(PATH_KINDS), data=st.sampled_from(PATH_KINDS + ["shopfloor:dev"]),
       out=st.sampled_from(PATH_KINDS + ["fresh"]),
       config=st.sampled_from([k for k in PATH_KINDS if k != "empty"]))   # an empty config is all defaults: a real run
# Each example runs a command (a quarter of a second; the first import of a stage takes up to 20 s on a busy
# machine, so a per-example alarm, not Hypothesis' deadline, is what catches a hang).
@settings(max_examples=40 if PROFILE == "fast" else max(40, settings().max_examples // 8), deadline=None)
def test_fuzz_cli_paths_end_in_one_error_line(tmp_path_factory, command, model, data, out, config):
    root = tmp_path_factory.mktemp("cli")
    paths = {name: (hostile_path(root, kind) if kind not in ("shopfloor:dev", "fresh") else
                    ("shopfloor:dev" if kind == "shopfloor:dev" else root / "fresh-out"))
             for name, kind in (("model", model), ("data", data), ("out", out), ("config", config))}
    argv = {"eval": ["eval", "--model", str(paths["model"]), "--data", str(paths["data"]), "--out", str(paths["out"])],
            "export": ["export", "--model", str(paths["model"]), "--out", str(paths["out"])],
            "serve": ["serve", "--model", str(paths["model"]), "--feedback", str(paths["data"])]}.get(
        command, [command, "--config", str(paths["config"]), "--out", str(paths["out"])])
    assert all(isinstance(p, (Path, str)) and (p == "shopfloor:dev" or Path(p).is_absolute()) for p in paths.values())
    before = snapshot(root)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), alarm(HANG_SECONDS):
        try:
            code = main(argv)
        except SystemExit as exc:   # argparse
            code = exc.code
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (argv, err.getvalue())
    assert lines and "error:" in lines[-1] and "Traceback" not in err.getvalue(), (argv, err.getvalue())
    written = paths["out"] if command != "serve" else paths["data"]
    assert snapshot(root, skip=Path(written)) == {k: v for k, v in before.items()
                                                   if not (k == str(written) or k.startswith(f"{written}/"))}
