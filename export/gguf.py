"""Export stage: the merged student -> GGUF f16 -> quantized GGUF (Q4_K_M by default), offline.

    convert   llama.cpp's own `convert_hf_to_gguf.py` (with its `gguf-py` and `conversion/`), taken from the
              llama-cpp-python source archive of the same version as the runtime (pinned: 0.3.36), so the file
              format the converter writes is the one the runtime reads. `make setup` unpacks it into
              `.venv/share/edgedistill/llama.cpp/`; EDGEDISTILL_CONVERTER points elsewhere.
    quantize  `llama_cpp.llama_model_quantize` from the installed llama-cpp-python: no llama.cpp build of ours,
              no `llama-quantize` binary to find. Given calibration conversations (the export stage passes the
              student's training data), an importance matrix measured on them steers the rounding
              (`export/imatrix.py`), as `llama-imatrix` + `llama-quantize --imatrix` would.
Each file appears only by atomic rename, so a killed export leaves no half-written GGUF behind.
The chat template and EOS travel inside the GGUF (the converter reads the merged folder's tokenizer files), so
the exported model stops where the student stops.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from edgedistill import UserError
from edgedistill.rundir import file_sha256

LLAMA_CPP_VERSION = "0.3.36"
QUANT_TYPES = {"Q4_K_M": 15, "Q8_0": 7, "Q4_0": 2, "Q5_K_M": 17, "Q6_K": 18}   # llama_ftype values


def converter_dir() -> Path:
    root = Path(os.environ.get("EDGEDISTILL_CONVERTER", Path(sys.prefix) / "share" / "edgedistill" / "llama.cpp"))
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise UserError(f"llama.cpp's converter is not at {root}: run `make setup` (it unpacks convert_hf_to_gguf.py "
                        f"from the llama-cpp-python {LLAMA_CPP_VERSION} source archive), or set EDGEDISTILL_CONVERTER")
    return root


def convert_f16(merged: Path, target: Path) -> Path:
    """HF folder -> GGUF f16 with llama.cpp's converter, in a subprocess (it brings its own `gguf` package)."""
    if not (merged / "config.json").is_file():
        raise UserError(f"{merged}: not a Hugging Face model folder (no config.json); export needs the merged student")
    tmp = target.with_name(target.name + ".partial")
    command = [sys.executable, str(converter_dir() / "convert_hf_to_gguf.py"), str(merged),
               "--outfile", str(tmp), "--outtype", "f16"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise UserError(f"llama.cpp's converter failed on {merged}:\n{tail}")
    tmp.replace(target)
    return target


def quantize(source: Path, target: Path, quant: str = "Q4_K_M", threads: int = 0,
             importance: dict | None = None) -> Path:
    """GGUF f16 -> `quant`; `importance` ({GGUF tensor name: per-column importance}) weights the rounding error."""
    import llama_cpp
    from export.imatrix import as_llama_imatrix
    if quant not in QUANT_TYPES:
        raise UserError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANT_TYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant]
    params.nthread = threads
    if importance:
        entries, _buffers = as_llama_imatrix(importance)   # _buffers keeps the arrays alive during the call
        params.imatrix = entries
    tmp = target.with_name(target.name + ".partial")
    from llama_cpp._utils import suppress_stdout_stderr
    with suppress_stdout_stderr(disable=False):         # llama.cpp logs a line per tensor
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
    if code != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise UserError(f"llama.cpp could not quantize {source} to {quant} (code {code})")
    tmp.replace(target)
    return target


def read_calibration(sft_jsonl: Path, limit: int = 32) -> list[list[dict]]:
    """The first `limit` conversations (prompt + completion messages) of an SFT file such as teacher/sft/train.jsonl."""
    from edgedistill.records import read_jsonl
    conversations = []
    for line, row in read_jsonl(sft_jsonl):
        if len(conversations) >= limit:
            break
        if not isinstance(row.get("prompt"), list) or not isinstance(row.get("completion"), list):
            raise UserError(f"{sft_jsonl}:{line}: calibration rows need 'prompt' and 'completion' message lists")
        conversations.append(row["prompt"] + row["completion"])
    return conversations


def calibration_importance(merged: Path, conversations: list[list[dict]], limit: int = 32) -> dict:
    """Importance matrix of the merged student over up to `limit` conversations, under the GGUF's tensor names."""
    from edgedistill.generate import render_prompt
    from edgedistill.models import load_model
    from export.imatrix import collect_importance, gguf_names
    model, tokenizer = load_model(str(merged))
    rows = []
    for messages in conversations[:limit]:
        prompt = render_prompt(tokenizer, messages[:-1]) + messages[-1]["content"]
        rows.append(tokenizer.encode(prompt, add_special_tokens=False)[:512])
    return gguf_names(collect_importance(model, rows), model.config)


def export_gguf(merged: Path, out: Path, quant: str = "Q4_K_M", keep_f16: bool = True,
                calibration: list[list[dict]] | None = None) -> dict:
    """merged HF folder -> student-f16.gguf -> student-<quant>.gguf. `calibration`: conversations (the last turn
    the assistant's) whose activations weight the quantization; without them, plain llama.cpp rounding."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    f16 = out / "student-f16.gguf"
    if not f16.exists():
        convert_f16(merged, f16)
    converted = time.time()
    quantized = out / f"student-{quant}.gguf"
    importance = None
    if not quantized.exists():
        importance = calibration_importance(merged, calibration) if calibration else None
        quantize(f16, quantized, quant, importance=importance)
    files = {"f16": f16, quant: quantized}
    result = {"gguf": str(quantized), "quant": quant, "convert_seconds": round(converted - started, 1),
              "quantize_seconds": round(time.time() - converted, 1),
              "importance_matrix": f"{len(importance)} tensors" if importance else None,
              "files": {name: {"path": str(p), "bytes": p.stat().st_size, "sha256": file_sha256(p)}
                        for name, p in files.items()}}
    if not keep_f16:
        f16.unlink()
    return result
