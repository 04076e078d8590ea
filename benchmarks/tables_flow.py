"""A plant engineer's flow, timed alone: one new spreadsheet, one config, one command, a served student, then FMEA
questions asked through /v1 with `serve --tables` (issue 33's bar: at most 60 minutes to the served student).

    .venv/bin/python benchmarks/tables_flow.py [--out runs/flow] [--questions 80] [--skip-run]

1. Writes OUT/line3_fmea.xlsx: a process FMEA of an invented injection-moulding line, 300 rows, our own text, with
   column names unlike the shipped plant's (Process Step, Potential Failure Mode, SEV, OCC, DET, RPN, ...).
2. Writes OUT/config.yaml (docs/tables.md, section 5) and times `edgedistill run --config OUT/config.yaml`.
3. Serves the run with `--tables OUT/line3_fmea.xlsx` and asks FMEA questions through /v1, worded here from
   templates the teacher never uses, with values drawn from the sheet. Each is scored by its reference query's
   rows (as sets), the way `edgedistill eval` scores table answers.
Prints and writes OUT/flow.json: the run's wall time and stage times, and /v1 accuracy by question kind.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedistill.checkers import canonical
from edgedistill.records import Question
from edgedistill.serve.process import serving
from edgedistill.table_queries import result_text
from edgedistill.tables import call, open_tables

STEPS = ["Resin drying", "Material feed", "Injection", "Packing", "Cooling", "Mould opening", "Ejection",
         "Robot pick", "Degating", "Visual inspection", "Label printing", "Boxing"]
MODES = ["Short shot", "Flash", "Sink marks", "Warpage", "Burn marks", "Splay", "Weld lines", "Jetting",
         "Sticking in mould", "Cracked part", "Wrong colour", "Contamination", "Dimensional drift", "Missing insert",
         "Label smeared", "Miscount"]
CAUSES = ["Wet resin", "Low melt temperature", "Worn check ring", "Blocked vent", "Low hold pressure",
          "Cooling channel scale", "Ejector pin wear", "Gripper vacuum leak", "Operator skipped step",
          "Sensor out of calibration", "Printer ribbon worn", "Wrong recipe loaded"]
ACTIONS = ["Add dryer dew-point alarm", "Check vents at each mould change", "Replace check ring every 500 h",
           "Add hold-pressure SPC chart", "Descale cooling circuit quarterly", "Fit vision check after ejection",
           "Poka-yoke on recipe selection", "Calibrate sensors monthly", "Train operators on the checklist"]
OWNERS = ["M. Rossi", "K. Tanaka", "L. Schmidt", "P. Nowak", "S. Haddad"]


def write_sheet(path: Path, rows: int = 300, seed: int = 33) -> None:
    import pandas
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < rows:
        step, mode, cause = rng.choice(STEPS), rng.choice(MODES), rng.choice(CAUSES)
        if (step, mode, cause) in seen:
            continue
        seen.add((step, mode, cause))
        sev, occ, det = rng.randint(2, 10), rng.randint(1, 9), rng.randint(1, 8)
        records.append({"Line ID": f"L3-{len(records) + 1:03d}", "Process Step": step, "Potential Failure Mode": mode,
                        "Potential Effect(s)": rng.choice(["Scrap", "Customer complaint", "Line stop", "Rework"]),
                        "SEV": sev, "Potential Cause(s)": cause, "OCC": occ,
                        "Current Controls": rng.choice(["Visual check", "First-off inspection", "None", "SPC"]),
                        "DET": det, "RPN": sev * occ * det, "Recommended Action": rng.choice(ACTIONS),
                        "Responsibility": rng.choice(OWNERS), "Action Status": rng.choice(["Open", "Closed"])})
    pandas.DataFrame(records).to_excel(path, index=False, sheet_name="PFMEA")


# (kind, wording, query[, tie]): {step}, {mode}, {cause}, {n} are drawn from the sheet. Worded as the public FMEA
# sets word their questions, not as teacher/table_questions.py does. `tie` lists the ranked values one past the
# cut: a ranking whose top two are equal has no one answer and is not asked.
ASKED = [
    ("lookup", "What RPN does the FMEA give '{mode}' caused by '{cause}' in the {step} step?",
     "SELECT rpn FROM line3_fmea WHERE process_step ILIKE '{step}' AND potential_failure_mode ILIKE '{mode}' "
     "AND potential_cause_s ILIKE '{cause}'"),
    ("lookup", "For {step}, what severity is assigned to {mode} from {cause}?",
     "SELECT sev FROM line3_fmea WHERE process_step ILIKE '{step}' AND potential_failure_mode ILIKE '{mode}' "
     "AND potential_cause_s ILIKE '{cause}'"),
    ("lookup", "Who owns the action for {mode} ({cause}) at {step}?",
     "SELECT responsibility FROM line3_fmea WHERE process_step ILIKE '{step}' AND potential_failure_mode ILIKE "
     "'{mode}' AND potential_cause_s ILIKE '{cause}'"),
    ("lookup", "What should we do about {mode} caused by {cause} during {step}?",
     "SELECT recommended_action FROM line3_fmea WHERE process_step ILIKE '{step}' AND potential_failure_mode ILIKE "
     "'{mode}' AND potential_cause_s ILIKE '{cause}'"),
    ("count", "How many failure modes are listed for the {step} step?",
     "SELECT count(*) FROM line3_fmea WHERE process_step ILIKE '{step}'"),
    ("count", "How many rows of the PFMEA have a severity of 9 or higher?",
     "SELECT count(*) FROM line3_fmea WHERE sev >= 9"),
    ("count", "How many actions are still open for {step}?",
     "SELECT count(*) FROM line3_fmea WHERE process_step ILIKE '{step}' AND action_status ILIKE 'open'"),
    ("rank", "Which process step has the highest total RPN?",
     "SELECT process_step FROM line3_fmea GROUP BY process_step ORDER BY sum(rpn) DESC LIMIT 1",
     "SELECT sum(rpn) FROM line3_fmea GROUP BY process_step ORDER BY sum(rpn) DESC LIMIT 2"),
    ("rank", "In {step}, which failure mode has the highest RPN?",
     "SELECT potential_failure_mode FROM line3_fmea WHERE process_step ILIKE '{step}' ORDER BY rpn DESC LIMIT 1",
     "SELECT rpn FROM line3_fmea WHERE process_step ILIKE '{step}' ORDER BY rpn DESC LIMIT 2"),
    ("aggregate", "What is the average RPN for {mode}, rounded to one decimal?",
     "SELECT round(avg(rpn), 1) FROM line3_fmea WHERE potential_failure_mode ILIKE '{mode}'"),
    ("aggregate", "What is the highest RPN recorded against {cause}?",
     "SELECT max(rpn) FROM line3_fmea WHERE potential_cause_s ILIKE '{cause}'"),
    ("filter", "Which failure modes in {step} have an RPN over {n}?",
     "SELECT potential_failure_mode FROM line3_fmea WHERE process_step ILIKE '{step}' AND rpn > {n}"),
    ("absent", "What is the RPN of {mode} in the Painting step?",
     "SELECT rpn FROM line3_fmea WHERE process_step ILIKE 'Painting' AND potential_failure_mode ILIKE '{mode}'"),
]


def questions(tool, count: int, seed: int = 7) -> list[Question]:
    rng = random.Random(seed)
    rows = call(tool, "SELECT process_step, potential_failure_mode, potential_cause_s, rpn FROM line3_fmea").cells
    out, seen, tries = [], set(), 0
    while len(out) < count and tries < count * 50:
        tries += 1
        kind, wording, query, *tie = ASKED[len(out) % len(ASKED)] if tries <= len(ASKED) else rng.choice(ASKED)
        step, mode, cause, rpn = rng.choice(rows)
        fields = {"step": step, "mode": mode, "cause": cause, "n": int(rpn) // 50 * 50}
        text, sql = wording.format(**fields), query.format(**fields)
        done = call(tool, sql)
        if text in seen or done.error or len(done.cells) > 8 or (kind != "absent" and not done.cells):
            continue
        if tie and len(top := call(tool, tie[0].format(**fields)).cells) == 2 and top[0] == top[1]:
            continue
        seen.add(text)
        out.append(Question(id=f"flow-{len(out) + 1}", question=text, answer=result_text(done), answer_type="rows",
                            query=sql, topic=kind))
    return out


CONFIG = """# A plant engineer's config (docs/tables.md, section 5), written by benchmarks/tables_flow.py
seed: 0
data:
  train:
    - {{source: plant_tables:train, limit: 300}}   # the table-query format on the shipped plant
    - {{source: plant_tables:practice, limit: 200}}   # reading schemas it has not seen
    - {{source: shopfloor:train, limit: 200}}      # arithmetic, so the calculator is not forgotten
  eval: plant_tables:heldout
  dev: plant_tables:dev
  eval_limit: 60
knowledge:
  tables: [plant, {sheet}]                       # rule questions are written about the sheet (the shipped plant
  practice_tables: [plant_practice]              # has its own splits); `serve --tables` serves the sheet alone
  value_hints: true
  name_hints: true
  other_tables: 1
  mixed_share: 0.15
teacher:
  kind: dataset
  tables: {{rule_questions: 300}}                 # questions about the new sheet, by rule
student: {{model: qwen2.5-coder-0.5b-instruct, method: lora, learning_rate: 4.0e-4, epochs: 1, batch_size: 8,
          max_length: 448, checkpoint_every: 25}}
export: {{quant: Q6_K, more_quants: [], onnx: none}}
eval: {{base: false, samples: 0, calibrate: false, max_new_tokens: 128}}
"""


def ask_all(url: str, asked: list[Question]) -> list[dict]:
    from openai import OpenAI
    client = OpenAI(base_url=url + "v1", api_key="unused", timeout=600)
    out = []
    for q in asked:
        reply = client.chat.completions.create(model="student", messages=[{"role": "user", "content": q.question}])
        extra = reply.model_extra["edgedistill"]
        rows = extra["tables"][-1] if extra.get("tables") else None
        said = result_text_of(rows) if rows else extra["answer"]
        out.append({"id": q.id, "topic": q.topic, "question": q.question, "reference": q.answer, "answer": said,
                    "query": rows and rows["query"], "correct": canonical(said, q) == canonical(q.answer, q)})
    return out


def result_text_of(rows: dict) -> str:
    from edgedistill.table_base import QueryResult, ToolCall
    if rows["error"]:
        return rows["error"]
    done = ToolCall(query=rows["query"], result=QueryResult(sql=rows["query"], columns=tuple(rows["columns"]),
                                                            rows=(), truncated=rows["truncated"]), cells=rows["rows"])
    return result_text(done)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/flow")
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--skip-run", action="store_true", help="reuse OUT/run (score /v1 only)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet = out / "line3_fmea.xlsx"
    write_sheet(sheet)
    (out / "config.yaml").write_text(CONFIG.format(sheet=sheet))
    report = {"sheet": str(sheet), "rows": 300}
    if not args.skip_run:
        started = time.time()
        subprocess.run([sys.executable, "-m", "edgedistill.cli", "run", "--config", str(out / "config.yaml"),
                        "--out", str(out / "run")], check=True)
        report["run_seconds"] = round(time.time() - started, 1)
        stages = json.loads((out / "run" / "manifest.json").read_text())["stages"]
        report["stage_seconds"] = {name: stage.get("seconds") for name, stage in stages.items()}
    tool = open_tables([sheet])
    asked = questions(tool, args.questions)
    with serving(str(out / "run"), "--tables", str(sheet), "--samples", "0",
                 log_path=out / "serve.log", timeout_s=600) as url:
        started = time.time()
        answers = ask_all(url, asked)
        report["ask_seconds"] = round(time.time() - started, 1)
    by_kind: dict[str, list[bool]] = {}
    for a in answers:
        by_kind.setdefault(a["topic"], []).append(a["correct"])
    report["accuracy"] = round(sum(a["correct"] for a in answers) / len(answers), 4)
    report["n"] = len(answers)
    report["by_kind"] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())}
    (out / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    (out / "flow.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
