"""Question loaders: each format -> list[Question] with the answer type that decides how it is checked.

    gsm8k   JSONL {"question", "answer": "...#### 42"}                   number
    svamp   a JSON array of {"Body", "Question", "Answer", "Type"}      number, topic = Type
    fsiq    FailureSensorIQ JSONL {"question", "options", "option_ids", "correct": [bool]}
                                                                        choice (a letter), topic = asset_name
    fmc     work orders, one "text,label" a line (MaintNorm FMC)        label of a closed set (options), no topic
    jsonl   our schema: {"question", "answer", "answer_type", "options", "topic"} (records.load_questions)
    csv     the same columns in a spreadsheet

In the kernel, so every stage reads the same formats: the teacher its seed questions, the eval stage its
benchmarks. `load_benchmark(path)` picks the format from the file's name and shape; `fmt=` forces one. Every
malformed item is a UserError naming the file and the line (or the array item) so the user can fix it. The questions
come back as a `Benchmark`, a list that also keeps where each question came from, so the eval can name a question it
leaves out (a prompt too long for the model's context) by the line a user can open.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from edgedistill import UserError
from edgedistill.records import Question, data_path, is_file, is_packaged, load_questions, read_jsonl, read_rows
from edgedistill.tabular_rows import row_format

FORMATS = ("gsm8k", "svamp", "fsiq", "fmc", "jsonl", "csv", "table")   # table: Excel, Parquet, TSV, a datasets folder


class Benchmark(list):
    """Questions in file order, with `where[i]`: where question i came from ("file:line", or "file: item n" in a
    JSON array). A slice keeps the places of the questions it keeps; anything else is a plain list of Questions."""

    def __init__(self, questions=(), where=()):
        super().__init__(questions)
        self.where = list(where)
        if len(self.where) != len(self):
            raise ValueError(f"{len(self)} questions but {len(self.where)} places")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Benchmark(super().__getitem__(index), self.where[index])
        return super().__getitem__(index)


def where_of(questions: list[Question]) -> list[str]:
    """Where each question came from: a Benchmark's places, else its id (questions built in code, or loaded by
    records.load_questions, which keeps no line numbers)."""
    where = getattr(questions, "where", None)
    return list(where) if where is not None and len(where) == len(questions) else [f"id {q.id}" for q in questions]


def located(path: Path, questions: list[Question]) -> Benchmark:
    """The questions records.load_questions read from `path`, with their lines. It makes one question of each
    non-blank row, in order, so the i-th row read again is the i-th question; its id confirms it (a row without an
    id got one made from its line)."""
    rows = read_rows(path)
    where = []
    for q, (number, obj) in zip(questions, rows):
        where.append(f"{path}:{number}" if str(obj.get("id", q.id)) == q.id else f"{path} (id {q.id})")
    rows.close()
    where += [f"{path} (id {q.id})" for q in questions[len(where):]]
    return Benchmark(questions, where)


def detect_format(path: Path) -> str:
    """The format of a benchmark file, from its suffix and, for JSON lines, the keys of its first object."""
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        return "fmc"
    if name.endswith(".json"):
        return "svamp"
    for _, first in read_jsonl(path):
        if "option_ids" in first and "correct" in first:
            return "fsiq"
        return "jsonl"   # GSM8K's "#### 42" answers are read by the generic loader too
    raise UserError(f"{path}: no questions in this file (it is empty)")


_SLICE = re.compile(r"^(.+)\[(-?\d*):(-?\d*)(?::(\d*))?\]$")


def split_slice(spec: str) -> tuple[str, slice | None]:
    """`FILE[start:stop:step]` -> (FILE, slice): a fixed part of a benchmark named with the file, Python-style
    (`train.jsonl[7273:]` the last 200 GSM8K train questions, `dev.jsonl[0:1800:6]` 300 spread over the file)."""
    match = _SLICE.match(spec)
    if not match or Path(spec).exists():
        return spec, None
    start, stop, step = (int(x) if x else None for x in match.group(2, 3, 4))
    if step == 0:
        raise UserError(f"{spec}: a slice step cannot be 0")
    return match.group(1), slice(start, stop, step)


def load_benchmark(spec: str, *, fmt: str | None = None, limit: int | None = None, skip: int = 0,
                   need_answers: bool = True, columns: dict[str, str] | None = None) -> list[Question]:
    """Questions of a benchmark file (or a packaged `shopfloor:` split), optionally `FILE[start:stop:step]`: the
    slice, then the `skip` first left out, then at most `limit`. Fixed, so two runs and two models see the same
    questions. `need_answers=False` lets a JSONL or CSV row go without an answer (questions a teacher model
    answers); the public formats always carry theirs. Excel, Parquet, TSV and datasets folders are read as rows of
    {question, answer, ...}, with `columns` naming our fields in the file (records.load_questions)."""
    file, part = split_slice(spec)
    path = data_path(file)
    if row_format(path) in ("tsv", "excel", "parquet", "dataset"):
        fmt = fmt or "table"
    elif not is_file(path):
        raise UserError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"unknown benchmark format {fmt!r}: use one of {', '.join(FORMATS)}")
    stop = skip + limit if limit else None
    if fmt == "table" or (fmt in ("jsonl", "csv") and columns):   # rows named as the file's row numbers
        questions = load_questions(path, need_answers=need_answers, limit=None if part else stop, columns=columns)
    elif fmt in ("gsm8k", "jsonl", "csv"):
        questions = located(path, load_questions(path, need_answers=need_answers, limit=None if part else stop))
    else:
        questions = {"svamp": load_svamp, "fsiq": load_fsiq, "fmc": load_fmc}[fmt](path)
    questions = (questions[part] if part else questions)[skip:stop]
    if not questions:
        raise UserError(f"{path}: no questions left after skipping {skip}")
    return questions


def load_svamp(path: Path) -> list[Question]:
    """SVAMP: the question is Body + Question; Answer is a float ("51.0" is written as 51)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON array of SVAMP items, got {type(items).__name__}")
    questions, places = [], []
    for number, item in enumerate(items, 1):
        where = f"{path}: item {number}"
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("Body", "Question")):
            raise UserError(f"{where}: needs string fields 'Body' and 'Question'")
        if not isinstance(item.get("Answer"), (int, float)) or isinstance(item["Answer"], bool):
            raise UserError(f"{where} ({item.get('ID', '?')}): 'Answer' must be a number, got {item.get('Answer')!r}")
        body = item["Body"].strip()
        body = body if body.endswith((".", "?", "!")) else body + "."   # some bodies stop without a full stop
        answer = float(item["Answer"])
        questions.append(Question(id=str(item.get("ID", f"svamp-{number}")), question=f"{body} {item['Question'].strip()}",
                                  answer=str(int(answer)) if answer.is_integer() else str(answer),
                                  answer_type="number", topic=str(item.get("Type", "")).replace("Divison", "Division")
                                  or None, source="svamp"))
        places.append(where)
    return Benchmark(questions, places)


def load_fsiq(path: Path) -> list[Question]:
    """FailureSensorIQ single-correct items: the options are shown with their letters; the answer is the letter of
    the one option marked correct."""
    questions, places = [], []
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        options, ids, correct = obj.get("options"), obj.get("option_ids"), obj.get("correct")
        if not isinstance(obj.get("question"), str) or not isinstance(options, list) or not options:
            raise UserError(f"{where}: needs 'question' (a string) and 'options' (a non-empty list)")
        ids = ids if isinstance(ids, list) else [chr(ord("A") + i) for i in range(len(options))]
        if not isinstance(correct, list) or len(correct) != len(options) or len(ids) != len(options):
            raise UserError(f"{where}: 'correct' and 'option_ids' need one entry per option ({len(options)})")
        if sum(bool(c) for c in correct) != 1:
            raise UserError(f"{where}: exactly one option must be correct, found {sum(bool(c) for c in correct)}")
        questions.append(Question(id=f"fsiq-{obj.get('id', number)}", question=obj["question"].strip(),
                                  answer=ids[correct.index(True)], answer_type="choice",
                                  options=[f"{i}. {o}" for i, o in zip(ids, options)],
                                  topic=obj.get("asset_name") or obj.get("subject"), source="failuresensoriq"))
        places.append(where)
    if not questions:
        raise UserError(f"{path}: no questions in this file (it is empty)")
    return Benchmark(questions, places)


FMC_SPLITS = ("train.txt", "dev.txt", "test.txt")


def read_fmc(path: Path) -> list[tuple[int, str, str]]:
    """(line number, work order text, label) per line; the label follows the line's last comma."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        text, comma, label = line.rpartition(",")
        if not comma or not text.strip() or not label.strip():
            raise UserError(f"{path}:{number}: expected 'work order text,label', got {line[:60]!r}")
        rows.append((number, text.strip(), label.strip()))
    return rows


def load_fmc(path: Path) -> list[Question]:
    """Work-order failure-mode classification. The closed label set is the union of the labels in this file and
    in its sibling splits (train/dev/test.txt beside it), so the prompt lists every label the data knows."""
    rows = read_fmc(path)
    if not rows:
        raise UserError(f"{path}: no work orders in this file (it is empty)")
    labels = {label for _, _, label in rows}
    for sibling in FMC_SPLITS:
        if (path.parent / sibling).is_file() and path.parent / sibling != path:
            labels |= {label for _, _, label in read_fmc(path.parent / sibling)}
    options = sorted(labels)
    return Benchmark([work_order_question(text, options, id=f"fmc-{path.stem}-{number}", answer=label)
                      for number, text, label in rows], [f"{path}:{number}" for number, _, _ in rows])


_WORK_ORDER = re.compile(r'^Maintenance work order: "(.*)"\. Which failure mode is it\?', re.S)


def work_order_text(question: str) -> str | None:
    """The work-order line of a question work_order_question wrote, else None."""
    match = _WORK_ORDER.match(question)
    return match.group(1) if match else None


def work_order_question(text: str, labels: list[str], *, id: str = "app", answer: str | None = None) -> Question:
    """A work-order line as the failure-code question the student is trained and asked with: the line quoted, then
    the closed label set as the options. The app's "failure code" mode asks it the same way."""
    return Question(id=id, question=f"Maintenance work order: \"{text.strip()}\". Which failure mode is it? Answer "
                                    f"with one of:", answer=answer, answer_type="label", options=list(labels),
                    source="fmc_mwo2kg")


def worked_examples(spec: str, n: int) -> list[Question]:
    """The first n train questions of a benchmark's own task, for an untrained model's prompt: `fsiq:dev` takes
    them from `fsiq:train`, `fmc:dev` from `fmc:train`; any other benchmark from `shopfloor:train`. A base model
    shown arithmetic before a work-order line is judged on the wrong format, not on the task."""
    if not n:
        return []
    name = spec.partition(":")[0] if is_packaged(spec) else "shopfloor"
    return load_questions(f"{name}:train", limit=n)

