"""Your data in, as it is: question rows from JSONL, CSV, TSV, Excel, Parquet and a save_to_disk folder, found under
the file's own column names, their answer types inferred when not given, and unreadable answers refused with file
and row; token F1 for free-text answers, checked against values worked out by hand."""
from __future__ import annotations

import json

import pytest

from edgedistill import UserError
from edgedistill.checkers import is_correct, token_f1
from edgedistill.records import answer_types_inferred, data_path, load_questions, load_sources
from edgedistill.tabular_rows import infer_answer_type

ROWS = [  # a plant's maintenance log: its own column names, no answer types
    {"Ticket": "T1", "Symptom": "Pump 3 seal weeping: what to do?", "Action": "Replace the seal"},
    {"Ticket": "T2", "Symptom": "Bolts on a 6-hole flange, 4 flanges?", "Action": "24"},
    {"Ticket": "T3", "Symptom": "Parts at 48 an hour for 25 hours?", "Action": "1,200"},
]
MAPPING = {"id": "Ticket", "question": "Symptom", "answer": "Action"}
EXPECTED = [("T1", "Replace the seal", "text"), ("T2", "24", "number"), ("T3", "1200", "number")]


def seen(questions):
    return [(q.id, q.answer, q.answer_type) for q in questions]


def write_delimited(path, rows, sep):
    header = list(rows[0])
    path.write_text("\n".join([sep.join(header)] + [sep.join(f'"{r[h]}"' if "," in r[h] else r[h] for h in header)
                                                     for r in rows]) + "\n", encoding="utf-8")


def write_excel(path, rows):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(rows[0]))
    for row in rows:
        sheet.append([int(v) if v.isdigit() else v for v in row.values()])   # a number cell, as Excel keeps it
    book.save(path)


def write_parquet(path, rows):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet
    pyarrow.parquet.write_table(pa.Table.from_pylist(rows), path)


def write_saved_dataset(folder, rows, split=None):
    """What `Dataset.save_to_disk` writes (an Arrow IPC stream, state.json, dataset_info.json), made with pyarrow
    alone; with `split`, inside a DatasetDict folder."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.ipc
    target = folder / split if split else folder
    target.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(target / "data-00000-of-00001.arrow"), "wb") as sink:
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (target / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (target / "dataset_info.json").write_text(json.dumps({"features": {}}))
    if split:
        (folder / "dataset_dict.json").write_text(json.dumps({"splits": [split]}))


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "xlsx", "parquet"])
def test_every_format_reads_the_same_questions_through_the_mapping(tmp_path, suffix):
    path = tmp_path / f"log.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix in ("csv", "tsv"):
        write_delimited(path, ROWS, "," if suffix == "csv" else "\t")
    elif suffix == "xlsx":
        write_excel(path, ROWS)
    else:
        write_parquet(path, ROWS)
    questions = load_questions(path, columns=MAPPING)
    assert seen(questions) == EXPECTED
    assert questions[0].question == "Pump 3 seal weeping: what to do?"
    assert answer_types_inferred(path) == {"text": 1, "number": 2}


def test_a_saved_dataset_folder_and_a_dataset_dict_split(tmp_path):
    write_saved_dataset(tmp_path / "single", ROWS)
    assert seen(load_questions(tmp_path / "single", columns=MAPPING)) == EXPECTED
    write_saved_dataset(tmp_path / "dict", ROWS, split="train")
    write_saved_dataset(tmp_path / "dict", ROWS[:1], split="test")
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert len(load_questions(str(tmp_path / "dict"), columns=MAPPING)) == 3          # "train" when none is named
    assert seen(load_questions(f"{tmp_path / 'dict'}:test", columns=MAPPING)) == EXPECTED[:1]
    assert data_path(f"{tmp_path / 'dict'}:test") == tmp_path / "dict" / "test"
    with pytest.raises(UserError, match="no split 'dev'; it has train, test"):
        load_questions(f"{tmp_path / 'dict'}:dev", columns=MAPPING)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a dataset written by save_to_disk"):
        load_questions(tmp_path / "plain")


def test_a_folder_written_by_the_datasets_package(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"q": datasets.Value("string"),
                                  "mode": datasets.ClassLabel(names=["Leaking", "Noise"]),
                                  "codes": datasets.Sequence(datasets.Value("string"))})
    data = datasets.Dataset.from_dict({"q": ["Seal drips?", "Bearing hums?"], "mode": [0, 1],
                                       "codes": [["Leaking", "Noise"]] * 2}, features=features)
    datasets.DatasetDict({"train": data, "validation": data.select([1])}).save_to_disk(str(tmp_path / "hf"))
    mapping = {"question": "q", "answer": "mode", "options": "codes"}
    questions = load_questions(f"{tmp_path / 'hf'}:validation", columns=mapping)   # ClassLabel 1 reads as its name
    assert [(q.question, q.answer, q.answer_type, q.options) for q in questions] == \
        [("Bearing hums?", "Noise", "label", ["Leaking", "Noise"])]


def test_inferred_types():
    lettered, plain = ["A. vibration", "B. current"], ["Leaking", "Noise", "Breakdown"]
    assert [infer_answer_type(a, None) for a in ("42", "1,200", "3.5", "-.5", "1,20", "12 mm", "Replace")] == \
        ["number", "number", "number", "number", "text", "text", "text"]
    assert [infer_answer_type(a, lettered) for a in ("B", "(a)", "b.", "B. current", "current", "C")] == \
        ["choice", "choice", "choice", "choice", "choice", None]
    assert [infer_answer_type(a, plain) for a in ("leaking", "Break-down", "C", "Overheating")] == \
        ["label", None, "choice", None]
    assert infer_answer_type(None, None) == "number" and infer_answer_type(None, plain) == "choice"


def test_inferred_types_are_reported_once_per_file(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    path.write_text("question,answer,options\nHow many?,12,\nWhich mode?,Noise,Leaking|Noise\n"
                    "Which sensor?,B,A. vibration|B. current\nWhat to do?,Replace the seal,\n"
                    "Per shift?,7,\n")
    questions = load_questions(path)
    assert [q.answer_type for q in questions] == ["number", "label", "choice", "text", "number"]
    assert is_correct("current", questions[2]) and is_correct("noise.", questions[1])
    assert capsys.readouterr().err == f"{path}: answer types inferred: number 2, choice 1, label 1, text 1\n"
    load_questions(path)
    assert capsys.readouterr().err == ""                        # said once
    assert answer_types_inferred(path)["number"] == 2
    stated = tmp_path / "stated.jsonl"
    stated.write_text('{"question": "Q?", "answer": "Replace the seal", "answer_type": "text"}\n')
    load_questions(stated)
    assert answer_types_inferred(stated) == {} and capsys.readouterr().err == ""


@pytest.mark.parametrize("row, message", [
    ({"answer": "Replace the seal", "answer_type": "number"}, r"'Replace the seal' does not read as a number"),
    ({"answer": "E", "answer_type": "choice", "options": ["A. x", "B. y"]}, r"'E' is not a letter A-B"),
    ({"answer": "Overheating", "answer_type": "label", "options": ["Leaking", "Noise"]}, r"not one of the row's"),
    ({"answer": "Overheating", "options": ["Leaking", "Noise"]}, r"neither a letter A-B nor one of the row's"),
])
def test_an_answer_its_type_cannot_read_is_an_error_naming_the_row(tmp_path, row, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"question": "Fine?", "answer": "1"}) + "\n" + json.dumps({"question": "Q?", **row}))
    with pytest.raises(UserError, match=rf"seeds.jsonl:2: .*{message}"):
        load_questions(path)


def test_excel_errors_name_the_sheet_row(tmp_path):
    path = tmp_path / "log.xlsx"
    write_excel(path, [{"question": "Q?", "answer": "1", "answer_type": "number"},
                       {"question": "Q2?", "answer": "seal", "answer_type": "number"}])
    with pytest.raises(UserError, match=r"log.xlsx: row 3: the answer 'seal' does not read as a number"):
        load_questions(path)


def test_the_mapping_and_the_header_are_checked(tmp_path):
    path = tmp_path / "log.csv"
    write_delimited(path, ROWS, ",")
    with pytest.raises(UserError, match=r"no column 'Problem', which data.columns names for 'question'.*Symptom"):
        load_questions(path, columns={"question": "Problem"})
    with pytest.raises(UserError, match=r"'symptom' is not a question field"):
        load_questions(path, columns={"symptom": "Symptom"})
    with pytest.raises(UserError, match=r"log.csv:1: the header has no 'question' column"):
        load_questions(path)
    parquet = tmp_path / "log.parquet"
    write_parquet(parquet, ROWS)
    with pytest.raises(UserError, match=r"log.parquet: the header has no 'question' column"):
        load_questions(parquet)
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a workbook")
    with pytest.raises(UserError, match="not a readable Excel workbook"):
        load_questions(fake)
    with pytest.raises(UserError, match=r"old \.xls workbook"):
        load_questions(tmp_path / "old.xls")


def test_packaged_splits_ignore_the_mapping_and_sources_pass_it_on(tmp_path):
    assert load_questions("shopfloor:dev", limit=2, columns=MAPPING) == load_questions("shopfloor:dev", limit=2)
    path = tmp_path / "log.csv"
    write_delimited(path, ROWS, ",")

    class Source:   # a data.train source as the config gives it
        source, weight, limit, model_confirmed_weight = str(path), 2.0, None, 0.5
    questions = load_sources([Source()], columns=MAPPING)
    assert seen(questions) == EXPECTED and {q.weight for q in questions} == {2.0}


@pytest.mark.parametrize("predicted, reference, f1", [
    ("Replace the seal", "replace seal", 1.0),                    # case and the article go; same tokens
    ("replace the pump seal", "replace seal", 0.8),               # p 2/3, r 2/2: 2*(2/3)/(5/3) = 4/5
    ("tighten bolts", "replace seal", 0.0),
    ("seal seal seal", "seal", 0.5),                              # p 1/3, r 1: 2*(1/3)/(4/3) = 1/2
    ("check the oil level, then refill", "refill oil", 4 / 7),   # p 2/5, r 2/2: 2*(2/5)/(7/5) = 4/7
    ("seal-kit", "seal kit", 0.0),                                # punctuation is deleted: "sealkit"
    ("The", "a", 1.0),                                            # nothing left on either side
    ("the", "seal", 0.0),
    (None, "seal", 0.0),
])
def test_token_f1_against_hand_computed_values(predicted, reference, f1):
    assert token_f1(predicted, reference) == pytest.approx(f1)


def test_free_text_answers_are_scored_by_exact_match_and_token_f1_side_by_side():
    from edgedistill.metrics import evaluate
    from edgedistill.records import Question

    class Fixed:
        backend, generated_tokens = "fixed", 0

        def generate(self, conversations, sampling, batch_size=1, progress=None):
            return ["Answer: Replace the pump seal", "Answer: replace the seal."][:len(conversations)]

    questions = [Question(id="a", question="Seal leak: what do we do?", answer="Replace the seal", answer_type="text"),
                 Question(id="b", question="Seal leak again?", answer="Replace the seal", answer_type="text")]
    result = evaluate(Fixed(), questions, k=1, label=None)
    assert result.figure("text_exact_match") == 0.5            # the second, once case and punctuation are dropped
    assert result.figure("text_token_f1") == round((0.8 + 1.0) / 2, 4)   # "replace pump seal" vs "replace seal"


def test_a_spreadsheet_with_its_own_column_names_trains_and_evaluates(tmp_path):
    """data.columns maps the sheet's names to ours; the teacher turns its rows into SFT records and the evaluation
    reads the same formats (Excel to train on, Parquet to evaluate)."""
    import json

    import pandas

    from edgedistill.cli import main
    from edgedistill.datasets import load_benchmark
    rows = {"Symptom": ["Seal leak on the filler pump", "Bearing noise on the capper", "How many caps in 3 boxes of 40?"],
            "Action": ["Replace the seal", "Grease the bearing", "120"]}
    pandas.DataFrame(rows).to_excel(tmp_path / "sheet.xlsx", index=False)
    pandas.DataFrame(rows).to_parquet(tmp_path / "held.parquet")
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: {tmp_path / 'sheet.xlsx'}, eval: {tmp_path / 'held.parquet'}, "
                      f"dev: {tmp_path / 'held.parquet'}, columns: {{question: Symptom, answer: Action}}}}\n"
                      f"teacher: {{kind: dataset, select: {{decontaminate_eval: false}}}}\n")
    assert main(["teach", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    sft = [json.loads(line) for line in (tmp_path / "run/teacher/sft/train.jsonl").read_text().splitlines()]
    assert sorted(r["answer_type"] for r in sft) == ["number", "text", "text"]
    assert any(r["completion"][0]["content"] == "Answer: Replace the seal" for r in sft)
    held = load_benchmark(str(tmp_path / "held.parquet"), columns={"question": "Symptom", "answer": "Action"})
    assert [q.answer_type for q in held] == ["text", "text", "number"]
