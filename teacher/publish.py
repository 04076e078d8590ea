"""The teacher's outputs as a Hugging Face `datasets` folder: parquet per view, and a dataset card.

    <run>/teacher/dataset/
        README.md                                  card: sources, counts, yield, filters; `configs` for load_dataset
        sft/train-<hash>.parquet           answer-first   {"prompt": [...], "completion": [...], ...}
        sft_rationale_first/train-<hash>.parquet   the same content, rationale first
        preferences/train-<hash>.parquet   {"prompt": [...], "chosen": [...], "rejected": [...], ...}

`datasets.load_dataset("<run>/teacher/dataset", "sft")` (and so TRL's SFTTrainer and DPOTrainer) reads them as
they are; the student stage reads the JSONL twins in `sft/` and `preferences/`. Each file is named by a hash of
its rows and the card names that file: `datasets` keys its cache on the card's paths, so two folders (or two runs
into one folder) with the same file names would load the first one's cached rows (datasets 5.2.0 does).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgedistill.records import write_text_atomic

VIEWS = {"sft": "answer-first SFT records (prompt/completion chat messages)",
         "sft_rationale_first": "the same records with the rationale before the answer (the pre-thinking baseline)",
         "preferences": "preference pairs (prompt/chosen/rejected) for DPO"}


def write_parquet(folder: Path, rows: list[dict]) -> str:
    """`folder/train-<hash of the rows>.parquet` (older files there removed); returns its name."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder.mkdir(parents=True, exist_ok=True)
    name = f"train-{hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:12]}.parquet"
    table = pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.string())})
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    tmp.replace(folder / name)
    for old in folder.glob("*.parquet"):
        if old.name != name:
            old.unlink()
    return name


def write_dataset(root: Path, views: dict[str, list[dict]], summary: dict, sources: dict) -> None:
    files = {name: f"{name}/{write_parquet(root / name, rows)}" for name, rows in views.items()}
    write_text_atomic(root / "README.md", dataset_card(views, files, summary, sources))


def dataset_card(views: dict[str, list[dict]], files: dict[str, str], summary: dict, sources: dict) -> str:
    configs = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {files[name]}\n"
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
