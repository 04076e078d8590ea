"""Question rows from the files a plant already keeps, read as they are: TSV, Excel (.xlsx), Parquet and a Hugging
Face `save_to_disk` folder, beside the JSONL and CSV that records.py reads; the column mapping that finds our fields
under the file's own column names; and the answer type a row gets when it states none.

Every reader yields (number, row): the row as a dict of its non-empty cells, and the number a person finds the row
by (the line of a text file, the row of an Excel sheet, the 1-based row of a Parquet or Arrow table), so an error
names file and row. Readers need no `datasets` package: a saved dataset is Arrow IPC streams that pyarrow reads.
"""
from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from edgedistill import UserError
from edgedistill.answer_rules import OPTION_LETTER, choice_letter, label_of, words


EXCEL_SUFFIXES = (".xlsx", ".xlsm")
PARQUET_SUFFIXES = (".parquet", ".pq")
TSV_SUFFIXES = (".tsv", ".tab")
TEXT_FORMATS = ("jsonl", "csv", "tsv")   # formats whose rows are found by line number


def safe_is_dir(path: str | Path) -> bool:
    """Path.is_dir that says False, not OSError, for a name the system refuses (too long, a NUL byte)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def row_format(path: str | Path) -> str:
    """jsonl, csv, tsv, excel, parquet or dataset (a save_to_disk folder): by the suffix, a folder by being one."""
    name = str(path).lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(TSV_SUFFIXES):
        return "tsv"
    if name.endswith(EXCEL_SUFFIXES):
        return "excel"
    if name.endswith(".xls"):
        raise UserError(f"{path}: an old .xls workbook; open it in Excel or LibreOffice and save it as .xlsx")
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "dataset" if safe_is_dir(path) else "jsonl"


def where(path: str | Path, number: int) -> str:
    """How an error names a row: `file:line` for text files, `file: row N` for sheets and tables."""
    return f"{path}:{number}" if row_format(path) in TEXT_FORMATS else f"{path}: row {number}"


# --- Hugging Face save_to_disk folders ---------------------------------------------------------------------------

def dataset_folder(spec: str) -> Path | None:
    """The folder of rows a `folder[:split]` spec names, or None when the spec names no folder.

    A DatasetDict folder (dataset_dict.json beside one subfolder per split) gives the split named after the colon,
    "train" when none is; a single dataset's folder (state.json) is itself the rows.
    """
    head, colon, split = spec.rpartition(":")
    if colon and not safe_is_dir(spec) and safe_is_dir(head):
        folder, split = Path(head), split
    elif safe_is_dir(spec):
        folder, split = Path(spec), ""
    else:
        return None
    index = folder / "dataset_dict.json"
    if not index.is_file():
        if split:
            raise UserError(f"{spec}: {folder} is not a DatasetDict (no dataset_dict.json), so it has no splits; "
                            f"name the folder alone")
        return folder
    splits = _json_file(index).get("splits") or sorted(p.name for p in folder.iterdir() if p.is_dir())
    split = split or "train"
    if split not in splits:
        raise UserError(f"{folder}: no split {split!r}; it has {', '.join(map(str, splits))}: name one as "
                        f"{folder}:{splits[0] if splits else 'SPLIT'}")
    return folder / split


def _json_file(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); was the folder written by save_to_disk?") from None
    return value if isinstance(value, dict) else {}


def _arrow_table(folder: Path):
    """The saved dataset's rows, its data-*.arrow streams in the order state.json lists them."""
    import pyarrow as pa
    import pyarrow.ipc

    if not (folder / "state.json").is_file():
        raise UserError(f"{folder}: a folder, but not a dataset written by save_to_disk (no state.json); give a "
                        f"JSONL, CSV, TSV, .xlsx or .parquet file, or a save_to_disk folder")
    listed = [f.get("filename") for f in _json_file(folder / "state.json").get("_data_files") or []]
    names = [n for n in listed if isinstance(n, str)] or sorted(p.name for p in folder.glob("data-*.arrow"))
    if not names:
        raise UserError(f"{folder}: no data-*.arrow files in this dataset folder")
    tables = []
    for name in names:
        try:
            with pa.OSFile(str(folder / name)) as source:
                tables.append(pyarrow.ipc.open_stream(source).read_all())
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"{folder / name}: not a readable Arrow stream ({exc})") from None
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _class_labels(folder: Path) -> dict[str, list[str]]:
    """ClassLabel columns of a saved dataset (stored as integers) and their names, from dataset_info.json."""
    info = folder / "dataset_info.json"
    features = _json_file(info).get("features") if info.is_file() else None
    if not isinstance(features, dict):
        return {}
    return {column: list(map(str, spec["names"])) for column, spec in features.items()
            if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and isinstance(spec.get("names"), list)}


def _dataset_rows(folder: Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    table, labels = _arrow_table(folder), _class_labels(folder)

    def rows():
        for number, row in enumerate(table.to_pylist(), 1):
            for column, names in labels.items():
                value = row.get(column)
                if isinstance(value, int) and 0 <= value < len(names):
                    row[column] = names[value]
            yield number, row
    return list(table.column_names), rows()


# --- Excel and Parquet -------------------------------------------------------------------------------------------

def _excel_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The first sheet: its first non-empty row is the header; rows keep Excel's numbers (the header is row 1)."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable Excel workbook ({exc}); save it from Excel as .xlsx") from None
    lines = enumerate(book.worksheets[0].iter_rows(values_only=True), 1)
    header: list[str] = []
    for _, values in lines:
        if any(tidy_cell(v) is not None for v in values):
            header = [str(tidy_cell(v) or "") for v in values]
            break

    def rows():
        try:
            for number, values in lines:
                yield number, dict(zip(header, values))
        finally:
            book.close()   # a read-only workbook holds its file open until closed
    return header, rows()


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    import pyarrow as pa
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
    return list(table.column_names), enumerate(table.to_pylist(), 1)


def read_table(path: str | Path, columns: dict[str, str] | None = None) -> Iterator[tuple[int, dict]]:
    """(row number, row) for each non-empty row of an Excel sheet, a Parquet file or a save_to_disk folder, the
    row's fields renamed by `columns` (ours -> the file's)."""
    path = Path(path)
    kind = row_format(path)
    if kind == "dataset":
        header, rows = _dataset_rows(path)
    elif not path.is_file():
        raise UserError(f"{path}: no such file")
    else:
        header, rows = (_excel_rows if kind == "excel" else _parquet_rows)(path)
    check_header(str(path), header, columns)
    for number, raw in rows:
        try:
            row = tidy_row(raw)
        except ValueError as exc:
            raise UserError(f"{where(path, number)}: {exc}") from None
        if row:
            yield number, mapped(row, columns)


# --- cells, options and the column mapping ------------------------------------------------------------------------

def tidy_cell(value):
    """A cell as a question field holds it: text stripped, blanks and NaN as None, 42.0 as 42 (Excel and pandas
    store whole numbers as floats, which would turn id 17 into "17.0"), dates as ISO text, lists as lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return tidy_cell(float(value))
    if isinstance(value, (list, tuple)):
        return [tidy_cell(v) for v in value]
    return str(value)


def parse_options(value) -> list:
    """A row's options: a list as it is, or text holding a JSON list or options separated by `|`."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
    text = str(value)
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"'options' starts with '[' but is not a JSON list ({exc})") from None
    return [o.strip() for o in text.split("|")]


def tidy_row(raw: dict) -> dict:
    """A row's non-empty cells under their stripped column names, `options` parsed; {} for a blank row."""
    row = {}
    for key, value in raw.items():
        value = tidy_cell(value)
        if key and value is not None and value != []:
            row[str(key).strip()] = value
    if "options" in row:
        row["options"] = parse_options(row["options"])
    return row


def check_mapping(columns: dict[str, str] | None, fields: Iterable[str]) -> None:
    """A column mapping names our fields (keys) and the file's columns (values), both as text."""
    fields = tuple(fields)
    for ours, theirs in (columns or {}).items():
        if ours not in fields:
            raise UserError(f"data.columns: {ours!r} is not a question field; map some of {', '.join(fields)} to "
                            f"your file's column names (e.g. question: Symptom, answer: Action)")
        if not isinstance(theirs, str) or not theirs.strip():
            raise UserError(f"data.columns: {ours!r} must name one column of your file, got {theirs!r}")


def check_header(where_header: str, header: list, columns: dict[str, str] | None) -> None:
    """Every mapped column is in the header, and some column holds the questions."""
    names = [str(name).strip() for name in header if name is not None]
    for ours, theirs in (columns or {}).items():
        if theirs.strip() not in names:
            raise UserError(f"{where_header}: no column {theirs!r}, which data.columns names for '{ours}' "
                            f"(the file's columns: {names})")
    if "question" not in (columns or {}) and "question" not in names:
        raise UserError(f"{where_header}: the header has no 'question' column (found: {header}); name the "
                        f"column that holds the questions, or map yours in data.columns (e.g. question: Symptom)")


def mapped(row: dict, columns: dict[str, str] | None) -> dict:
    """The row under our field names: each mapped column renamed to its field, the other cells kept as they are."""
    if not columns:
        return row
    theirs = {name.strip() for name in columns.values()}
    out = {key: value for key, value in row.items() if key not in theirs}
    out.update({ours: row[name.strip()] for ours, name in columns.items() if name.strip() in row})
    if "options" in columns and "options" in out:
        out["options"] = parse_options(out["options"])
    return out


# --- answer types --------------------------------------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")   # 42, 1,200, 3.5, -.5
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")   # float() text, without inf and nan
_LETTER_ANSWER = re.compile(r"\(?([A-Za-z])[).:]?")


def infer_answer_type(answer: str | None, options: list[str] | None) -> str | None:
    """The answer type of a row that states none; None when its answer fits none of its options.

    Without options: number when the answer reads as one ("42", "1,200", "3.5"), else text; with options: choice
    when the answer is a letter within them, or the text of one of lettered options ("A. vibration"); label when
    it names one of plain options by its words (case and punctuation aside). A row without an answer is a number
    (the former default) or, with options, a choice.
    """
    if answer is None:
        return "choice" if options else "number"
    answer = str(answer).strip()
    if not options:
        return "number" if _PLAIN_NUMBER.fullmatch(answer) else "text"
    letter = _LETTER_ANSWER.fullmatch(answer)
    if letter and ord(letter.group(1).upper()) - ord("A") < len(options):
        return "choice"
    said = words(answer)
    by_words = [words(option) for option in options]
    if all(OPTION_LETTER.match(option) for option in options):
        return "choice" if said in by_words + [words(OPTION_LETTER.sub("", o)) for o in options] else None
    return "label" if said in by_words else None


INFERRED: dict[str, dict[str, int]] = {}   # file -> {answer type: rows given it by inference}, its last load
_SAID: set[str] = set()                     # files whose counts went to stderr already


def inferred_note(path: str | Path, counts: dict[str, int]) -> str:
    """`data/x.csv: answer types inferred: number 12, text 30`."""
    order = ("number", "choice", "label", "text", "rows")
    return f"{path}: answer types inferred: " + ", ".join(f"{kind} {counts[kind]}" for kind in order
                                                            if counts.get(kind))


def report_inferred(path: str, counts: dict[str, int]) -> None:
    """Keep a load's counts for records.answer_types_inferred; say them on stderr the first time a file is read
    with any, so a plant engineer sees what the loader decided (and a rerun does not repeat it)."""
    INFERRED[path] = dict(counts)
    if counts and path not in _SAID:
        _SAID.add(path)
        print(inferred_note(path, counts), file=sys.stderr, flush=True)


def inferred_type(values: dict, where_row: str) -> str:
    """infer_answer_type for one row's fields (a table question, with its reference query, has rows), or a
    UserError saying how to fix a row that fits no type."""
    if values.get("query"):
        return "rows"
    options = values.get("options")
    kind = infer_answer_type(values.get("answer"), options)
    if kind is None:
        last = chr(ord("A") + min(len(options), 26) - 1)
        raise UserError(f"{where_row}: the answer {values['answer']!r} is neither a letter A-{last} nor one of the "
                        f"row's options {_shown(options)}: correct the answer, or give the row an answer_type")
    return kind


def _shown(options: list[str], most: int = 6) -> str:
    return str(options[:most])[:-1] + f", ... {len(options) - most} more]" if len(options) > most else str(options)


def readable_as(answer: str, kind: str, options: list[str]) -> bool:
    """Would checkers.canonical read `answer` as its type? The same rules (answer_rules): a choice is a letter
    within the options or one option's words; a label is one option's words or names exactly one; a text has
    words."""
    if kind == "choice":
        return choice_letter(answer.strip(), options) is not None
    if kind == "label":
        return label_of(answer, options) is not None
    return bool(words(answer))


def unreadable(question) -> str | None:
    """Why the checker could never match this question's (a records.Question) reference answer as its stated
    type, or None.

    Such a row would score every model wrong (or teach a wrong target), so the loader refuses it rather than keep
    it. A table question's rows come from its query and are not checked here.
    """
    answer, kind = question.answer, question.answer_type
    if answer is None or kind == "rows":
        return None
    if kind == "number":
        if _DECIMAL.fullmatch(answer.replace(",", "").strip()):   # what numbers_match reads the reference as
            return None
        return (f"the answer {answer!r} does not read as a number, but the row's answer_type is number: write the "
                f"number alone (1200, 3.5) or set answer_type to text")
    options = question.options or []
    if readable_as(answer, kind, options):
        return None
    if kind == "choice":
        letters = f"a letter A-{chr(ord('A') + min(len(options), 26) - 1)} or one option's text" if options \
            else "an option letter (A, B, ...)"
        return f"the answer {answer!r} is not {letters}, but the row's answer_type is choice"
    if kind == "label":
        return f"the answer {answer!r} is not one of the row's options {_shown(options)} (answer_type label)"
    return f"the answer {answer!r} has no words to compare (answer_type {kind})"
