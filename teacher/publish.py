"""The teacher's outputs as a Hugging Face `datasets` folder: parquet per view, and a dataset card.

    <run>/teacher/dataset/
        README.md                                  card: sources, counts, yield, filters; `configs` for load_dataset
        sft/train-00000-of-00001.parquet           answer-first   {"prompt": [...], "completion": [...], ...}
        sft_rationale_first/train-00000-of-00001.parquet   the same content, rationale first
        preferences/train-00000-of-00001.parquet   {"prompt": [...], "chosen": [...], "rejected": [...], ...}

`datasets.load_dataset("<run>/teacher/dataset", "sft")` (and so TRL's SFTTrainer and DPOTrainer) reads them as
they are; the student stage reads the JSONL twins in `sft/` and `preferences/`.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgedistill.records import write_text_atomic

VIEWS = {"sft": "answer-first SFT records (prompt/completion chat messages)",
         "sft_rationale_first": "the same records with the rationale before the answer (the pre-thinking baseline)",
         "preferences": "preference pairs (prompt/chosen/rejected) for DPO"}


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def write_dataset(root: Path, views: dict[str, list[dict]], summary: dict, sources: dict) -> None:
    for name, rows in views.items():
        write_parquet(root / name / "train-00000-of-00001.parquet", rows)
    write_text_atomic(root / "README.md", dataset_card(views, summary, sources))


def dataset_card(views: dict[str, list[dict]], summary: dict, sources: dict) -> str:
    configs = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train-*.parquet\n"
                      for name in views)
    counts = "\n".join(f"| `{name}` | {len(rows)} | {VIEWS.get(name, '')} |" for name, rows in views.items())
    selection = summary.get("selection", {})
    dropped = ", ".join(f"{reason} {n}" for reason, n in selection.get("dropped", {}).items() if n) or "none"
    return f"""---
configs:
{configs}tags:
- edgedistill
- distillation
- answer-first
---
# Teacher data written by edgedistill

| view | records | what |
|---|---|---|
{counts}

## Sources
- questions: `{sources.get('questions')}` ({summary.get('questions')} questions)
- teacher: `{sources.get('teacher')}` ({sources.get('kind')}), {sources.get('samples')} samples per question, temperature {sources.get('temperature')}
- hard negatives: `{sources.get('negatives') or 'none'}`
- step scorer: {sources.get('step_scorer')}

## Yield
- samples written: {summary.get('samples')}; verified: {summary.get('verified')} ({_share(summary.get('verified'), summary.get('samples'))})
- questions with a verified sample: {summary.get('questions_with_verified')} of {summary.get('questions')}
- references: {summary.get('references', {}).get('gold', 0)} from the data, {summary.get('references', {}).get('majority', 0)} by majority vote of the teacher's samples
- self-correction: {summary.get('self_corrected', 0)} questions recovered
- preference pairs: {summary.get('pairs', {}).get('pairs', 0)}

## Filters and selection
- dropped: {dropped}
- kept for SFT: {summary.get('kept')}

Every sample in `samples.jsonl` beside this folder carries its provenance: teacher model, backend, sampling
parameters, seed and the hash of its prompt.

```json
{json.dumps(sources, indent=1)}
```
"""


def _share(part, whole) -> str:
    return f"{part / whole:.1%}" if part is not None and whole else "n/a"
