"""Decode speed of the merged student in PyTorch fp32 against each exported artifact, in one run.

    .venv/bin/python benchmarks/export_speed.py [--run runs/quickstart]      # a few minutes on 2 cores

Takes a finished run's student/merged and export/ (student-Q8_0.gguf, student-Q4_K_M.gguf, onnx/); a missing
artifact is exported first, offline. Each model is measured in a process of its own (export/probe.py): the same
shop-floor prompt in its chat template, 128 greedy tokens with the KV cache on (EOS suppressed, so every run decodes
exactly 128), 2 threads, one warm-up, the median of 3. PyTorch fp32 is what a user gets from plain transformers;
the GGUF files run on llama.cpp (llama-cpp-python), the ONNX folder on onnxruntime-genai.
PyTorch fp32 is measured two ways: `model.generate` (what a transformers user calls; the baseline of the ratio) and
a bare forward loop with the KV cache (transformers without generate's per-step overhead).
The last line is `q4_k_m_vs_torch=<Q4_K_M decode tokens/s over PyTorch fp32 generate's>`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgedistill.export.probe import measure_in_subprocess


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="a run directory with student/merged")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = Path(args.run)
    merged, export = run / "student" / "merged", run / "export"
    if not (merged / "config.json").is_file():
        raise SystemExit(f"{merged} not found: run `make quickstart` first (or pass --run)")
    missing_gguf = [q for q in ("Q8_0", "Q4_K_M") if not (export / f"student-{q}.gguf").is_file()]
    if missing_gguf:
        from edgedistill.export.gguf import export_gguf
        export_gguf(merged, export, missing_gguf)
    if not (export / "onnx" / "genai_config.json").is_file():
        from edgedistill.export.onnx import build_onnx
        build_onnx(merged, export / "onnx", "int4-fp-head", args.threads)
    models = {"PyTorch fp32 (transformers.generate)": ("torch-generate", merged),
              "PyTorch fp32 (own KV-cache loop)": ("torch", merged),
              "GGUF Q8_0 (llama.cpp)": ("gguf", export / "student-Q8_0.gguf"),
              "GGUF Q4_K_M (llama.cpp)": ("gguf", export / "student-Q4_K_M.gguf"),
              "ONNX (onnxruntime-genai)": ("onnx", export / "onnx")}
    results = {}
    for name, (kind, path) in models.items():
        results[name] = measure_in_subprocess(kind, str(path), args.threads, args.tokens, args.repeats)
        r = results[name]
        if "error" in r:
            print(f"{name:32} failed: {r['error']}", flush=True)
            continue
        print(f"{name:32} decode {r['decode_tokens_per_s']:7.1f} tok/s  prefill {r['prefill_tokens_per_s']:7.1f} tok/s"
              f"  load {r['load_seconds']:5.2f} s  peak {r['peak_memory_mb']:7.1f} MB", flush=True)
    (run / "export_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    torch_speed = results["PyTorch fp32 (transformers.generate)"].get("decode_tokens_per_s")
    q4 = results["GGUF Q4_K_M (llama.cpp)"].get("decode_tokens_per_s")
    for name, r in results.items():
        if torch_speed and r.get("decode_tokens_per_s"):
            print(f"  {name:32} {r['decode_tokens_per_s'] / torch_speed:5.2f}x PyTorch fp32")
    print(f"q4_k_m_vs_torch={q4 / torch_speed:.2f}" if q4 and torch_speed else "q4_k_m_vs_torch=nan")


if __name__ == "__main__":
    main()
