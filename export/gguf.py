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
from edgedistill.runners import RUNNERS, calculator_note, modelfile_path, server_script_path, with_note

LLAMA_CPP_VERSION = "0.3.36"


def quant_types() -> dict[str, int]:
    """Every file type llama.cpp's quantizer offers, by name (Q4_K_M, Q8_0, IQ4_XS, ...): llama_ftype values."""
    import llama_cpp
    prefix = "LLAMA_FTYPE_MOSTLY_"
    return {name[len(prefix):]: getattr(llama_cpp, name) for name in dir(llama_cpp) if name.startswith(prefix)}


def converter_dir() -> Path:
    root = Path(os.environ.get("EDGEDISTILL_CONVERTER", Path(sys.prefix) / "share" / "edgedistill" / "llama.cpp"))
    if not (root / "convert_hf_to_gguf.py").is_file():
        raise UserError(f"llama.cpp's converter is not at {root}: run `make setup` (it unpacks convert_hf_to_gguf.py "
                        f"from the llama-cpp-python {LLAMA_CPP_VERSION} source archive), or set EDGEDISTILL_CONVERTER")
    return root


# llama.cpp's converter, run as its own script, with one fix: for Gemma 3 it writes no per-layer sliding-window
# pattern, and llama.cpp then assumes the 5-sliding-1-full layout of Google's checkpoints. A student with other
# `layer_types` (fewer layers, say) would convert without error and attend wrongly (top-1 agreement 0.78 on a
# 2-layer model); writing the pattern from the config makes it exact, and changes nothing for 5:1 models.
_CONVERT = r"""
import runpy, sys
from pathlib import Path
root = Path(sys.argv.pop(1))
sys.path[:0] = [str(root), str(root / "gguf-py")]
sys.argv[0] = str(root / "convert_hf_to_gguf.py")
try:
    from conversion.gemma import Gemma3Model
except ImportError:
    Gemma3Model = None
if Gemma3Model is not None:
    original = Gemma3Model.set_gguf_parameters
    def set_gguf_parameters(self):
        original(self)
        types = self.hparams.get("layer_types")
        if types:
            self.gguf_writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    Gemma3Model.set_gguf_parameters = set_gguf_parameters
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_f16(merged: Path, target: Path) -> Path:
    """HF folder -> GGUF f16 with llama.cpp's converter, in a subprocess (it brings its own `gguf` package)."""
    if not (merged / "config.json").is_file():
        raise UserError(f"{merged}: not a Hugging Face model folder (no config.json); export needs the merged student")
    tmp = target.with_name(target.name + ".partial")
    command = [sys.executable, "-c", _CONVERT, str(converter_dir()), str(merged), "--outfile", str(tmp),
               "--outtype", "f16"]
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
    from edgedistill.export.imatrix import as_llama_imatrix
    types = quant_types()
    if quant not in types:
        raise UserError(f"unknown quantization {quant!r}; llama.cpp offers {', '.join(sorted(types))}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[quant]
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
    from edgedistill.generation import render_prompt
    from edgedistill.device import exact_cpu
    from edgedistill.models import load_model
    from edgedistill.export.imatrix import collect_importance, gguf_names
    model, tokenizer = load_model(str(merged), placement=exact_cpu())   # the importance of the exact weights
    rows = []
    for messages in conversations[:limit]:
        prompt = render_prompt(tokenizer, messages[:-1]) + messages[-1]["content"]
        rows.append(tokenizer.encode(prompt, add_special_tokens=False)[:512])
    return gguf_names(collect_importance(model, rows), model.config)


def export_gguf(merged: Path, out: Path, quant: str | list[str] = "Q4_K_M", keep_f16: bool = True,
                calibration: list[list[dict]] | None = None) -> dict:
    """merged HF folder -> student-f16.gguf -> student-<quant>.gguf for each quant (the first is the main one).
    `calibration`: conversations (the last turn the assistant's) whose activations weight the quantization;
    without them, plain llama.cpp rounding. Each GGUF gets an Ollama Modelfile and a server command beside it."""
    quants = [quant] if isinstance(quant, str) else list(quant)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    f16 = out / "student-f16.gguf"
    if not f16.exists():
        convert_f16(merged, f16)
    converted = time.time()
    files = {"f16": f16}
    importance = None
    for name in quants:
        files[name] = out / f"student-{name}.gguf"
        if not files[name].exists():
            if calibration and importance is None:     # measured once, used by every quantization
                importance = calibration_importance(merged, calibration)
            quantize(f16, files[name], name, importance=importance)
    for name in quants:
        write_runners(files[name])
    result = {"gguf": str(files[quants[0]]), "quant": quants[0], "quants": quants,
              "convert_seconds": round(converted - started, 1), "quantize_seconds": round(time.time() - converted, 1),
              "importance_matrix": f"{len(importance)} tensors" if importance else None,
              "files": {name: {"path": str(p), "bytes": p.stat().st_size, "sha256": file_sha256(p)}
                        for name, p in files.items()}}
    if not keep_f16:
        f16.unlink()
        del result["files"]["f16"]
    return result


# Ollama templates for the chat formats our packaged families use, keyed by a marker of their Jinja template.
# Ollama cannot run Jinja; without a TEMPLATE it guesses from the GGUF's, so we write the right one when we know it.
OLLAMA_TEMPLATES = {
    "<|im_start|>": ('{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                     '<|im_start|>assistant\n'),
    "<start_of_turn>": ('{{- range .Messages }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}'
                        '{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n'),
}


def write_runners(gguf: Path) -> dict:
    """`<name>.Modelfile` (Ollama) and `<name>.server.sh` beside a GGUF: its chat template, its stop tokens, greedy
    decoding, bound to 127.0.0.1. The server script runs `edgedistill serve` (with the calculator) where it is
    installed, else llama.cpp's server; each file says at its top what the calculator's absence costs."""
    import llama_cpp
    from edgedistill.formats import INSTRUCTION
    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template", "")
    stops = {llm._model.token_get_text(llm.token_eos())}
    eot = llm.metadata.get("tokenizer.ggml.eot_token_id")
    if eot is not None:
        stops.add(llm._model.token_get_text(int(eot)))
    if "<end_of_turn>" in template:
        stops.add("<end_of_turn>")
    lines = [f"# Ollama: ollama create student -f {gguf.stem}.Modelfile && ollama run student", f"FROM ./{gguf.name}"]
    known = next((t for marker, t in OLLAMA_TEMPLATES.items() if marker in template), None)
    if known:
        lines.append(f'TEMPLATE """{known}"""')
    else:
        lines.append("# TEMPLATE: this chat format is not one we map; Ollama derives one from the GGUF's template")
    lines += [f'SYSTEM """{INSTRUCTION}"""', *[f'PARAMETER stop "{s}"' for s in sorted(stops)],
              "PARAMETER temperature 0", "PARAMETER num_ctx 2048"]
    modelfile, server = modelfile_path(gguf), server_script_path(gguf)
    # each with its calculator note ("not measured yet": the eval stage writes its figures there)
    modelfile.write_text(with_note("\n".join(lines) + "\n", calculator_note(RUNNERS[modelfile_path])))
    server.write_text(with_note(
        "#!/bin/sh\n"
        f'cd "$(dirname "$0")"\n'
        "# With edgedistill installed: the Q&A page and an OpenAI-compatible API (/v1) on 127.0.0.1:8080, the\n"
        "# calculator filled while decoding.\n"
        "if command -v edgedistill >/dev/null; then\n"
        f"  exec edgedistill serve --model {gguf.name} --host 127.0.0.1 --port 8080\n"
        "fi\n"
        "# Without it: llama.cpp's OpenAI-compatible server with the chat template and EOS stored in the GGUF, and\n"
        "# no calculator. The system prompt the student was trained with: " + INSTRUCTION + "\n"
        "if command -v llama-server >/dev/null; then\n"
        f"  exec llama-server -m {gguf.name} --jinja -c 2048 -t 2 --temp 0 --host 127.0.0.1 --port 8080\n"
        "fi\n"
        f"exec python -m llama_cpp.server --model {gguf.name} --n_ctx 2048 --n_threads 2 --host 127.0.0.1 "
        "--port 8080\n", calculator_note(RUNNERS[server_script_path])))
    server.chmod(0o755)
    return {"modelfile": str(modelfile), "server": str(server), "stops": sorted(stops)}
