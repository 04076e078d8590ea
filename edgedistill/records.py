"""Records on disk: questions in, samples and SFT views out. One schema each, JSON lines, written atomically.

A Question is what a seed file holds; a Sample is one teacher output for a question. Both are plain dicts on disk
(so any tool reads them) and dataclasses here (so a missing or misspelled field is caught with file and line).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from edgedistill import UserError
from edgedistill.calculator import CalculatorError, evaluate
from edgedistill.tabular_rows import INFERRED, TEXT_FORMATS, check_header, check_mapping, dataset_folder, \
    inferred_type, mapped, read_table, report_inferred, row_format, tidy_row, unreadable, where

ANSWER_TYPES = ("number", "choice", "label", "text", "rows")
_TEXT_FIELDS = ("question", "answer_type", "rationale", "answer_expr", "topic", "source", "checked_by", "query",
                "context", "hints")


@dataclass
class Question:
    id: str
    question: str
    answer: str | None = None
    answer_type: str = "number"
    options: list[str] | None = None
    rationale: str | None = None        # a reference rationale, GSM8K-style `<<expr=value>>` annotations allowed
    answer_expr: str | None = None      # one expression computing the answer, when the data has one
    topic: str | None = None
    source: str | None = None
    weight: float = 1.0                 # loss weight of its training records: its data.train source's, not the file's
    checked_by: str | None = None       # app feedback: who vouched for `answer`, "human" (a correction) or "model"
                                        # (a thumbs-up kept the model's own answer); trained at lower weight
    query: str | None = None            # a table question's reference SELECT; `answer` is its rows as the tool
                                        # writes them (table_queries.result_text), answer_type "rows"
    context: str | None = None          # the schema of the tables the question is asked over (tables.schema_text)
    hints: str | None = None            # the question's names found in those tables (table_values.hint_line)


@dataclass
class Sample:
    id: str                             # "<question_id>#<k>": unique, so a resumed teacher skips it
    question_id: str
    teacher: dict                       # model, backend, sampling parameters, seed
    text: str                           # what the teacher wrote (calculator values filled in)
    answer: str | None
    rationale: str | None
    format: str = "answer-first"        # or "rationale-first"
    verdict: dict = field(default_factory=dict)   # {"correct": bool, "how": "...", "reference": "..."}
    scores: dict = field(default_factory=dict)   # step scores: {"steps": [...], "min": x, "mean": y}
    calculator_ok: bool = True
    origin: str = "teacher"             # teacher | self-correction | negative (a weaker model's sample)

    @classmethod
    def from_dict(cls, row: dict) -> "Sample":
        """A sample read back from the teacher's log: the fields it has, the defaults for those an older log lacks
        (origin "teacher", format "answer-first"), extra keys ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in row.items() if key in known}
        for key, default in (("teacher", {}), ("answer", None), ("rationale", None)):
            values.setdefault(key, default)
        return cls(**values)


def as_samples(rows: Iterable) -> list[Sample]:
    """Samples, from records read back (dicts) or already Samples."""
    return [row if isinstance(row, Sample) else Sample.from_dict(row) for row in rows]


def is_file(path: str | Path) -> bool:
    """Path.is_file that says False, not OSError, for a name the system refuses (too long, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a malformed line is a UserError naming file and line."""
    path = Path(path)
    if not is_file(path):
        raise UserError(f"{path}: no such file")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                f"save the file as UTF-8") from None
            if not line.strip():
                continue
            yield number, parse_json_object(line, f"{path}:{number}")


def parse_json_object(line: str, where: str) -> dict:
    """One JSONL line as a dict; anything else (bad JSON, a 5000-digit number, deep nesting) is a UserError."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:   # int digits over Python's limit; nesting past the stack
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise UserError(f"{where}: not usable JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def read_csv(path: str | Path, delimiter: str = ",", columns: dict[str, str] | None = None) \
        -> Iterator[tuple[int, dict]]:
    """(line number, row) for each row of a CSV (or, with delimiter "\\t", TSV) file with a header; empty cells are
    left out of the row, and `columns` (our field -> the file's column) renames the mapped ones.

    The plant's own questions often come as a spreadsheet with just a `question` column. `options` may hold a JSON
    list or options separated by `|`.
    """
    path = Path(path)
    if not is_file(path):
        raise UserError(f"{path}: no such file")
    kind = "TSV" if delimiter == "\t" else "CSV"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            check_header(f"{path}:1", reader.fieldnames or [], columns)
            for row in reader:
                obj = tidy_row(row)
                if obj:
                    yield reader.line_num, mapped(obj, columns)
        except (csv.Error, ValueError) as exc:   # UnicodeDecodeError and a bad JSON options list are ValueErrors
            raise UserError(f"{path}:{max(1, reader.line_num)}: malformed {kind} row ({exc}); a {kind} must be UTF-8 "
                            f"text") from None


def _read_jsonl_mapped(path: Path, columns: dict[str, str]) -> Iterator[tuple[int, dict]]:
    """JSONL rows under our field names; a row without the mapped question key says so, naming the mapping."""
    for number, obj in read_jsonl(path):
        if "question" in columns and columns["question"] not in obj:
            raise UserError(f"{path}:{number}: no key {columns['question']!r}, which data.columns names for "
                            f"'question' (the row's keys: {sorted(obj)})")
        yield number, mapped(obj, columns)


def read_rows(path: str | Path, columns: dict[str, str] | None = None) -> Iterator[tuple[int, dict]]:
    """(number, row) of a JSONL, CSV, TSV, Excel (.xlsx) or Parquet file, or a `save_to_disk` dataset folder,
    chosen by the suffix; `columns` (our field -> the file's column) finds our fields under the file's names."""
    check_mapping(columns, QUESTION_FIELDS)
    kind = row_format(path)
    if kind in ("csv", "tsv"):
        return read_csv(path, delimiter="," if kind == "csv" else "\t", columns=columns)
    if kind == "jsonl":
        return _read_jsonl_mapped(Path(path), columns) if columns else read_jsonl(path)
    return read_table(path, columns)


CHECKED_BY = ("human", "model")
QUESTION_FIELDS = tuple(f.name for f in dataclasses.fields(Question) if f.name != "weight")   # what a row may give


def question_from_dict(obj: dict, where: str, default_id: str) -> Question:
    """A Question from a seed line: our schema, or GSM8K style ({"question", "answer": "...#### 42"}).

    A row without an answer_type gets one from its answer and options (tabular_rows.infer_answer_type); a row
    whose answer its type's checker cannot read is an error here, not a question every model gets wrong later.
    """
    if not isinstance(obj.get("question"), str) or not obj["question"].strip():
        raise UserError(f"{where}: missing field 'question' (a non-empty string)")
    known = {f.name for f in dataclasses.fields(Question)} - {"weight"}
    values = {key: obj[key] for key in known if key in obj and obj[key] is not None}
    if "options" in values and not (isinstance(values["options"], list)
                                    and all(isinstance(o, str) for o in values["options"])):
        raise UserError(f"{where}: 'options' must be a list of strings")
    for key in _TEXT_FIELDS:
        if key in values and not isinstance(values[key], str):
            raise UserError(f"{where}: '{key}' must be a string, got {type(values[key]).__name__}")
    for key, kinds in (("id", (str, int)), ("answer", (str, int, float))):
        if key in values and (not isinstance(values[key], kinds) or isinstance(values[key], bool)):
            raise UserError(f"{where}: '{key}' must be a string or a number, got {type(values[key]).__name__}")
    values["id"] = str(obj.get("id", default_id))
    answer = values.get("answer")
    if isinstance(answer, str) and "####" in answer:   # GSM8K: worked solution, then "#### final"
        values["rationale"] = values.get("rationale") or answer[:answer.rindex("####")].strip()
        answer = _GSM8K_FINAL.search(answer).group(1)
    if answer is not None:
        values["answer"] = str(answer).replace(",", "").strip() if isinstance(answer, (int, float)) or \
            re.fullmatch(r"[-\d.,]+", str(answer).strip()) else str(answer).strip()
    if "checked_by" not in values and obj.get("verdict") in ("up", "down") and "answer" in values:
        # a feedback row written before rows said so: a thumbs-up that kept the model's answer is the model's word
        values["checked_by"] = "model" if str(obj.get("model_answer", "")).strip() == str(values["answer"]) \
            else "human"
    if values.get("checked_by", "human") not in CHECKED_BY:
        raise UserError(f"{where}: checked_by must be one of {CHECKED_BY}, got {values['checked_by']!r}")
    if values.get("answer_type", "number") not in ANSWER_TYPES:
        raise UserError(f"{where}: answer_type must be one of {ANSWER_TYPES}, got {values['answer_type']!r}")
    if "answer_type" not in values:
        values["answer_type"] = inferred_type(values, where)
    if "answer_expr" in values:   # checked here, not where a training target is written hours later
        try:
            evaluate(values["answer_expr"])
        except CalculatorError as exc:
            raise UserError(f"{where}: 'answer_expr' is not one the calculator evaluates ({exc})") from None
    question = Question(**values)
    problem = unreadable(question)
    if problem:
        raise UserError(f"{where}: {problem}")
    return question


SEEDS_DIR = Path(__file__).parent / "seeds"
# Packaged seed sets, named `<set>:<split>` and shipped as seeds/<set>_<split>.jsonl with a card beside them.
PACKAGED_SETS = ("shopfloor", "fsiq", "fmc", "plant_tables")


def is_packaged(spec: str) -> bool:
    """`shopfloor:train`, `fsiq:dev`, `fmc:train`...: a split shipped in the package, not a path."""
    return spec.partition(":")[0] in PACKAGED_SETS and ":" in spec


def packaged_name(stem: str) -> str:
    """A packaged file's split name: `plant_tables_heldout_table` -> plant_tables:heldout_table (the longest set
    name that starts it, since set and split names both may hold underscores)."""
    name = max((n for n in PACKAGED_SETS if stem.startswith(n + "_")), key=len, default=stem.partition("_")[0])
    return f"{name}:{stem[len(name) + 1:]}"


def data_path(spec: str) -> Path:
    """A packaged split (`shopfloor:train`, `fsiq:dev`, `fmc:train`, ...), a `save_to_disk` folder (`folder[:split]`,
    a DatasetDict's "train" split when none is named: the split's subfolder), or a file's path."""
    if is_packaged(spec):
        name, _, split = spec.partition(":")
        path = SEEDS_DIR / f"{name}_{split}.jsonl"
        if not is_file(path):
            known = ", ".join(packaged_name(p.stem) for p in sorted(SEEDS_DIR.glob("*_*.jsonl")))
            raise UserError(f"unknown packaged split {spec!r}: use one of {known}")
        return path
    return dataset_folder(spec) or Path(spec)


def load_questions(path: str | Path, need_answers: bool = True, limit: int | None = None,
                   columns: dict[str, str] | None = None) -> list[Question]:
    """Questions from a JSONL, CSV, TSV, .xlsx or Parquet file or a save_to_disk folder (read_rows); clear errors
    for malformed rows, missing fields and an empty file. `columns` maps our fields to the file's column names
    (packaged splits, in our schema already, ignore it). Rows that state no answer_type get one inferred: the counts
    go to stderr once per file, and answer_types_inferred(path) returns them."""
    columns = None if is_packaged(str(path)) else columns
    path = data_path(str(path))
    questions, lines, inferred = [], {}, {}
    for number, obj in read_rows(path, columns):
        at = where(path, number)
        q = question_from_dict(obj, at, default_id=f"{Path(path).stem}-{number}")
        if need_answers and not q.answer and not q.query:   # a table question: its query gives the answer
            raise UserError(f"{at}: missing field 'answer' (needed to verify and score)")
        if q.id in lines:   # ids key the teacher's resumable log: two questions cannot share one
            place = "on line" if row_format(path) in TEXT_FORMATS else "in row"
            raise UserError(f"{at}: id {q.id!r} already used {place} {lines[q.id]}")
        lines[q.id] = number
        if obj.get("answer_type") is None:
            inferred[q.answer_type] = inferred.get(q.answer_type, 0) + 1
        questions.append(q)
        if limit and len(questions) >= limit:
            break
    if not questions:
        raise UserError(f"{path}: no questions in this file (it is empty)")
    report_inferred(str(path), inferred)
    return questions


def answer_types_inferred(path: str | Path) -> dict[str, int]:
    """How many rows of the file's last load got each answer type by inference ({} when every row stated its own
    or the file was not loaded): for a caller's log or report (tabular_rows.inferred_note words it)."""
    return dict(INFERRED.get(str(data_path(str(path))), {}))


def load_sources(sources, need_answers: bool = True, columns: dict[str, str] | None = None) -> list[Question]:
    """The questions of every `data.train` source in order (each with its `source`, `weight` and `limit`), each
    question carrying its source's weight; an id found in two sources is an error, since ids key the teacher's
    resumable logs. A source's own `columns` (when it has the attribute) wins over the shared `columns`."""
    questions, found_in = [], {}
    for source in sources:
        mapping = getattr(source, "columns", None) or columns
        for q in load_questions(source.source, need_answers=need_answers, limit=source.limit, columns=mapping):
            if q.id in found_in:
                raise UserError(f"question id {q.id!r} is in both {found_in[q.id]} and {source.source}: ids must be "
                                f"unique across the data.train sources")
            found_in[q.id] = source.source
            q.weight = source.weight * (source.model_confirmed_weight if q.checked_by == "model" else 1.0)
            questions.append(q)
    return questions


def by_question(samples: Iterable) -> dict[str, list]:
    """Samples (or records with a "question_id") grouped by their question id, in file order."""
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s.question_id if isinstance(s, Sample) else s["question_id"], []).append(s)
    return groups


def to_dict(record) -> dict:
    return {k: v for k, v in dataclasses.asdict(record).items() if v is not None}


def read_json_object(path: str | Path) -> dict:
    """A cache's JSON object, or {} when it is missing or damaged: a cache is rebuilt, never trusted blindly."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


class AppendLog:
    """An append-only JSONL file of records with ids: a killed writer loses at most its last, partial line.

    `done()` returns the ids already written, so a rerun regenerates no finished record. On open the file must be
    JSONL (else a UserError, and the file is left as it was: pointed at a model or a spreadsheet by mistake, we
    never write into it). A last line without its newline is kept when it parses (a hand-edited seed file) and
    moved to `<file>.torn` when it does not (the process died mid-write), with a warning.
    """

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise UserError(f"{self.path}: not a file; give a JSONL file to append to")
        data = self.path.read_bytes()
        body, tail = data[:data.rfind(b"\n") + 1], data[data.rfind(b"\n") + 1:]
        self._check_jsonl(body)
        if not tail.strip():
            return
        try:
            parse_json_object(tail.decode("utf-8"), f"{self.path}: last line")
        except (UnicodeDecodeError, UserError):
            if not body:   # nothing but one unparsable line: more likely not our file than a torn write
                raise UserError(f"{self.path}: not a JSONL file (its only line does not parse); refusing to "
                                f"append to it") from None
            torn = self.path.with_name(self.path.name + ".torn")
            with torn.open("ab") as handle:
                handle.write(tail + b"\n")
            self._rewrite(body)
            print(f"warning: {self.path}: its last line was cut off mid-write ({len(tail)} bytes); moved it to "
                  f"{torn}", file=sys.stderr, flush=True)
            return
        self._append_bytes(b"\n")   # a whole record that only lacks its newline

    def _check_jsonl(self, body: bytes) -> None:
        for number, raw in enumerate(body.splitlines(), 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    parse_json_object(line, f"{self.path}:{number}")
            except (UnicodeDecodeError, UserError) as exc:
                reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                raise UserError(f"{self.path}: not a JSONL file ({reason}); refusing to append to it. Give a new "
                                f"file name or a JSONL file") from None

    def _rewrite(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.repair.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def _append_bytes(self, data: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [obj for _, obj in read_jsonl(self.path)]

    def done(self) -> set[str]:
        return {str(row[self.key]) for row in self.rows() if self.key in row}

    def append(self, rows: Iterable[dict]) -> None:
        self._append_bytes("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
