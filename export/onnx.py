"""ONNX export: the merged student -> an onnxruntime-genai folder (model.onnx, genai_config.json, tokenizer), offline.

    builder   onnxruntime-genai's model builder (`onnxruntime_genai.models.builder`): it works with transformers 5,
              where optimum-onnx cannot install (it caps transformers below 4.58). It reads the merged safetensors
              folder and writes the graph with a KV cache, genai_config.json (EOS ids, context length) and the
              tokenizer with its chat template; run in a subprocess, offline (HF_HUB_OFFLINE), into a .partial
              folder renamed at the end, so a killed export leaves nothing half-written
    settings  int4 keeps quality or not depending on how it is made. Measured on a 135M model (teacher-forced KL
              against fp32 on random weights): the builder's default (RTN, block 32, the tied embedding and LM head
              in int4 too) 0.42; the LM head in int8 (`k_quant_last`) 0.32; LM head and embedding left in full
              precision, block 16: 0.16; int8: 0.002. `quality: auto` exports them in that order, smallest first,
              and keeps the first whose parity check passes (export/parity.py)
Supported: the builder's architectures, among them Llama (SmolLM2), Gemma 3 and Qwen 2/3.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import typing
from pathlib import Path

from edgedistill import UserError
from edgedistill.config import OnnxBuild

# name -> (precision, builder extra options), one per name of config.OnnxBuild (the names live there; `auto` and
# `none` are the export's, not a build). Option names as onnxruntime-genai 0.18 reads them: it silently ignores
# unknown keys (and the old int4_* spellings), so the builder's own config is checked after export.
SETTINGS = {
    "int4": ("int4", {"block_size": 32, "accuracy_level": 4}),
    "int4-int8-head": ("int4", {"block_size": 32, "accuracy_level": 4, "algo_config": "k_quant_last"}),
    "int4-fp-head": ("int4", {"block_size": 16, "accuracy_level": 4,
                              "nodes_to_exclude": "/lm_head/MatMul,/model/embed_tokens/Gather"}),
    "int8": ("int8", {}),
    "fp32": ("fp32", {}),
}
AUTO_ORDER = ["int4", "int4-int8-head", "int4-fp-head", "int8"]   # smallest first; the first to pass parity stays
assert list(SETTINGS) == list(typing.get_args(OnnxBuild)) and set(AUTO_ORDER) <= set(SETTINGS), \
    "export/onnx.py's SETTINGS must hold exactly config.OnnxBuild's names"

# Run in a child process: the builder prints per-layer logs, appends its own folder to sys.path, and holds the full
# model in memory; none of that should stay in the exporting process.
_BUILD = r"""
import os, sys
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
from onnxruntime_genai.models.builder import create_model, parse_extra_options
source, out, precision, cache = sys.argv[1:5]
options = sys.argv[5:]
extra = parse_extra_options(None, source, out, precision, "cpu", cache, options)
config = extra["hf_details"]["hf_config"]
rope = getattr(config, "rope_parameters", None)
if isinstance(rope, dict) and "full_attention" in rope:
    # transformers 5 nests Gemma 3's RoPE per layer type; the builder reads the flat fields of transformers 4
    full, local = rope["full_attention"], rope.get("sliding_attention", rope["full_attention"])
    config.rope_parameters, config.rope_theta = dict(full), full["rope_theta"]
    config.rope_local_base_freq = local["rope_theta"]
create_model(None, source, out, precision, "cpu", cache, **extra)
"""


def build_onnx(merged: Path, target: Path, setting: str = "int4-fp-head", threads: int | None = None) -> dict:
    """One ONNX folder at `target` from the merged HF folder with the named SETTINGS entry."""
    if setting not in SETTINGS:
        raise UserError(f"unknown ONNX setting {setting!r}; choose one of {', '.join(SETTINGS)} (or auto)")
    if not (merged / "config.json").is_file():
        raise UserError(f"{merged}: not a Hugging Face model folder (no config.json); ONNX export needs the merged "
                        f"student")
    try:
        import onnxruntime_genai  # noqa: F401
        import onnx_ir  # noqa: F401
    except ImportError as exc:
        raise UserError(f"ONNX export needs onnxruntime-genai, onnx and onnx-ir ({exc}): "
                        f"pip install onnxruntime-genai onnx onnx-ir") from None
    precision, options = SETTINGS[setting]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cache = partial.with_name(partial.name + "-cache")
    started = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run([sys.executable, "-c", _BUILD, str(merged), str(partial), precision, str(cache),
                             *[f"{k}={v}" for k, v in options.items()]], capture_output=True, text=True, env=env)
    shutil.rmtree(cache, ignore_errors=True)
    if result.returncode != 0 or not (partial / "genai_config.json").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise UserError(f"onnxruntime-genai's model builder failed on {merged} ({setting}):\n{tail}")
    _keep_generation_greedy(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    return {"path": str(target), "setting": setting, "precision": precision, "options": options,
            "bytes": size, "export_seconds": round(time.time() - started, 1)}


def _keep_generation_greedy(folder: Path) -> None:
    """The builder copies generation_config.json's sampling defaults (Gemma 3 ships do_sample: true) into
    genai_config.json's search options; an ONNX runtime user who calls generate() gets greedy, as llama.cpp's
    server command we write does. Our own decoding chooses tokens from the logits either way."""
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    config.setdefault("search", {})["do_sample"] = False
    path.write_text(json.dumps(config, indent=4))
