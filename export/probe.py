"""Speed and memory of one model file, measured in a process of its own (so peak memory is that model's alone).

    python -m export.probe torch|torch-generate|gguf|onnx PATH [--threads 2] [--new-tokens 128] [--repeats 3]

prints one JSON line: load seconds, prefill and decode tokens/s (the median of `repeats` after one warm-up), peak
resident memory. Decoding is greedy with the KV cache on, EOS suppressed so every run decodes exactly
`new_tokens`; the prompt is a shop-floor question in the model's chat template. The export stage's parity report
and benchmarks/export_speed.py both use it.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


PROMPT = [{"role": "system", "content": "Write 'Answer:' first, arithmetic as <<expression=>>, then 'Reason:'."},
          {"role": "user", "content": "A press line makes 60 brackets an hour. The night shift runs it for 7.5 hours "
                                      "and scraps 12 brackets. How many good brackets does the night shift make?"}]


class TorchModel:
    def __init__(self, path: str):
        from edgedistill.device import exact_cpu
        from edgedistill.models import load_model
        # the probe measures what the student costs on the CPU it ships to (speed, RSS), not on this machine's GPU
        self.model, self.tokenizer = load_model(path, placement=exact_cpu())
        self.model.eval()

    def prompt_ids(self):
        from edgedistill.generation import render_prompt
        return self.tokenizer.encode(render_prompt(self.tokenizer, PROMPT), add_special_tokens=False)

    def run(self, ids, new_tokens, eos):
        import torch
        with torch.no_grad():
            started = time.perf_counter()
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
            prefilled = time.perf_counter()
            for _ in range(new_tokens):
                logits = out.logits[0, -1]
                logits[list(eos)] = -float("inf")
                out = self.model(input_ids=logits.argmax().view(1, 1), past_key_values=out.past_key_values,
                                 use_cache=True)
            return prefilled - started, time.perf_counter() - prefilled


class TorchGenerate(TorchModel):
    """`model.generate` as a user calls it (greedy, KV cache on): the baseline a plain transformers user gets."""

    def run(self, ids, new_tokens, eos):
        import torch
        with torch.no_grad():
            started = time.perf_counter()
            self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
            prefilled = time.perf_counter()
            decode_started = time.perf_counter()
            self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=self.tokenizer.eos_token_id)
            # generate's own prefill is timed apart above and taken out of the decode time
            return prefilled - started, time.perf_counter() - decode_started - (prefilled - started)


class GgufModel:
    """Through edgedistill's own llama.cpp runtime (the one evaluation and the app use): llama_decode on a context
    of ours, logits read only for the last position, no per-token copy of a scores matrix. Its layers sit where
    evaluation's would (device.gpu_layers(): all on the GPU with a GPU build of llama-cpp-python, else the CPU)."""

    def __init__(self, path: str, threads: int):
        from edgedistill.generation.llamacpp import LlamaCppGenerator
        self.generator = LlamaCppGenerator(path, threads=threads)

    def prompt_ids(self):
        return self.generator.encode(self.generator.render(PROMPT), special=True)

    def run(self, ids, new_tokens, eos):
        return _timed_single_row(self.generator, ids, new_tokens, eos)


class OnnxModel:
    """Through edgedistill's ONNX runtime, on the provider evaluation would use (device.onnx_provider())."""

    def __init__(self, path: str, threads: int):
        from edgedistill.generation.onnx import OnnxGenerator
        self.generator = OnnxGenerator(path, threads)

    def prompt_ids(self):
        return self.generator.encode(self.generator.render(PROMPT))

    def run(self, ids, new_tokens, eos):
        return _timed_single_row(self.generator, ids, new_tokens, eos)


def _timed_single_row(generator, ids, new_tokens: int, eos) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of `new_tokens` greedy tokens, EOS masked, through the runtime's own
    single-row decode (the one the app streams with)."""
    started = time.perf_counter()
    logits, feed = generator.single_row(ids, new_tokens)
    prefilled = time.perf_counter()
    for _ in range(new_tokens):
        logits = logits[0]
        logits[list(eos)] = -float("inf")
        logits = feed(int(logits.argmax()))
    return prefilled - started, time.perf_counter() - prefilled


def measure(kind: str, path: str, threads: int = 2, new_tokens: int = 128, repeats: int = 3) -> dict:
    import torch
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = {"torch": lambda: TorchModel(path), "torch-generate": lambda: TorchGenerate(path),
             "gguf": lambda: GgufModel(path, threads),
             "onnx": lambda: OnnxModel(path, threads)}[kind]()
    load_seconds = time.perf_counter() - started
    eos = _eos_ids(kind, model)
    ids = model.prompt_ids()
    model.run(ids, 8, eos)                              # warm-up
    runs = [model.run(ids, new_tokens, eos) for _ in range(repeats)]
    prefill = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    return {"kind": kind, "load_seconds": round(load_seconds, 2), "prompt_tokens": len(ids),
            "prefill_tokens_per_s": round(len(ids) / prefill, 1), "decode_tokens_per_s": round(new_tokens / decode, 1),
            "new_tokens": new_tokens, "threads": threads,
            "peak_memory_mb": peak_memory_mb()}


def peak_memory_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a probe
    started from a large parent would report the parent's size (fork copies its page tables)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _eos_ids(kind, model) -> set:
    if kind.startswith("torch"):
        eos = model.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos or model.tokenizer.eos_token_id])
    if kind == "gguf":
        return model.generator.eos
    return model.generator.eos


def measure_in_subprocess(kind: str, path: str, threads: int = 2, new_tokens: int = 128, repeats: int = 3) -> dict:
    """`measure` in a fresh Python process: its peak memory is this model's, not the caller's."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "edgedistill.export.probe", kind, str(path), "--threads", str(threads),
                             "--new-tokens", str(new_tokens), "--repeats", str(repeats)],
                            capture_output=True, text=True, cwd=root)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"kind": kind, "error": (result.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["torch", "torch-generate", "gguf", "onnx"])
    parser.add_argument("path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.kind, args.path, args.threads, args.new_tokens, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
