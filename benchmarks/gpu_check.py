"""Every GPU path of edgedistill, each measured once on a tiny model built on the spot: one line per path.

    .venv/bin/python benchmarks/gpu_check.py [--minutes 8]

Not yet run on a GPU: docs/results.md gets its figures when a GPU machine is lent. On a machine without one (or
with EDGEDISTILL_DEVICE=cpu) every GPU path says "no GPU found" and the script ends in seconds.

The model is a 2-layer random Llama (128 wide, head size 64, which every vLLM attention backend takes) with a
byte-level BPE tokenizer trained here on the training rows: no network, no package index, no packaged GGUF, so
the script runs on a bare GPU machine with only the Python packages. Paths, in order:

    device                  the placement training gets (edgedistill.device.choose) and the CUDA device's name
    llama_cpp_cuda          whether llama-cpp-python was built with GPU offload (CMAKE_ARGS="-DGGML_CUDA=on")
    onnxruntime_genai_cuda  whether onnxruntime-genai has CUDA (the `gpu` extra: onnxruntime-genai-cuda)
    train_lora, train_full  steps/s and tokens/s of the product's SFT (student.sft.run_sft), LoRA and full
    sample_transformers     completion tokens/s of TransformersGenerator, 16 rows, on the inference placement
    vllm                    load seconds and completion tokens/s of the vLLM backend (pip install vllm)

Each prints one line, `path: figure | not installed | no GPU found | error: <message>`; the last line is
`gpu_check: ran=N no_gpu=N not_installed=N errors=N skipped=N`. The four heavy paths run in processes of their own
(a crash or vLLM's memory reservation stays there), each stopped at its share of what is left of --minutes; once
the deadline has passed, a path is "skipped: out of time". --run-on-cpu runs the heavy paths without a GPU too,
to check the script itself (those figures are CPU figures).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NO_GPU, NOT_INSTALLED, OUT_OF_TIME = "no GPU found", "not installed", "skipped: out of time"
HEAVY = ("train_lora", "train_full", "sample_transformers", "vllm")   # in a child process each, in this order
CHECKS = ("device", "llama_cpp_cuda", "onnxruntime_genai_cuda")          # cheap: in this process, first
SYSTEM = [{"role": "system", "content": "Write 'Answer:' first, arithmetic as <<expression=>>, then 'Reason:'."}]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TRAIN_ROWS, TRAIN_BATCH, TRAIN_EPOCHS = 64, 8, 4          # 32 optimizer steps
SAMPLE_ROWS, SAMPLE_TOKENS = 16, 64


class NoGpu(Exception):
    """The path needs a GPU this machine does not have (or EDGEDISTILL_DEVICE=cpu keeps it off)."""


class NotInstalled(Exception):
    """The path's runtime is not installed."""


@dataclass
class Outcome:
    kind: str      # "ran", "no_gpu", "not_installed", "errors", "skipped"
    text: str


# --- the tiny model, built here ---

def sft_rows(n: int = TRAIN_ROWS) -> list[dict]:
    """Answer-first SFT rows, the shape the teacher writes (tests/test_train.py makes the same)."""
    return [{"id": f"q{i}", "prompt": SYSTEM + [{"role": "user", "content": f"What is {i} times 3?"}],
             "completion": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}],
             "answer": str(i * 3), "answer_type": "number"} for i in range(n)]


def conversations(n: int = SAMPLE_ROWS) -> list[list[dict]]:
    return [SYSTEM + [{"role": "user", "content": f"A crate holds {i + 2} boxes. How many boxes are in 7 crates?"}]
            for i in range(n)]


def build_tokenizer():
    """A byte-level BPE (any text encodes) trained on the rows' own words, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [m["content"] for row in sft_rows() for m in row["prompt"] + row["completion"]]
    corpus += [m["content"] for conversation in conversations() for m in conversation]
    tokenizer.train_from_iterator(corpus + ["system user assistant"], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                      pad_token="<|endoftext|>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(folder: Path) -> Path:
    """A random 2-layer Llama and its tokenizer saved as a Hugging Face folder (what student.model takes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


# --- the cheap checks, in this process ---

def gpu_found() -> bool:
    """A CUDA GPU torch or a driver shows, unless EDGEDISTILL_DEVICE=cpu keeps every stage off it."""
    import torch
    from edgedistill import device
    if not device.gpu_wanted():
        return False
    return torch.cuda.is_available() or Path("/dev/nvidiactl").exists()


def check_device(has_gpu: bool) -> str:
    import torch
    from edgedistill import device
    where = device.choose(training=True).describe()
    if torch.cuda.is_available():
        return f"{where}; {torch.cuda.get_device_name(0)}"
    return f"{where}; torch sees no CUDA device"


def check_llama_cpp(has_gpu: bool) -> str:
    if not has_gpu:
        raise NoGpu
    try:
        import llama_cpp
    except ImportError:
        raise NotInstalled from None
    if llama_cpp.llama_supports_gpu_offload():
        from edgedistill import device
        return f"GPU offload yes (n_gpu_layers={device.gpu_layers()})"
    return 'GPU offload no: a CPU build; rebuild with CMAKE_ARGS="-DGGML_CUDA=on"'


def check_onnx(has_gpu: bool) -> str:
    if not has_gpu:
        raise NoGpu
    try:
        import onnxruntime_genai as og
    except ImportError:
        raise NotInstalled from None
    if og.is_cuda_available():
        from edgedistill import device
        return f"CUDA yes (provider {device.onnx_provider()})"
    return "CUDA no: a CPU build; pip install 'edgedistill[gpu]' (onnxruntime-genai-cuda)"


# --- the heavy paths, each in a child process ---

def train(work: Path, method: str) -> str:
    """32 optimizer steps of student.sft.run_sft, as `edgedistill run` trains."""
    import torch
    from edgedistill.config import Config, DataConfig, StudentConfig
    from edgedistill.models import load_model
    from edgedistill.student.batching import tokenise
    from edgedistill.student.sft import run_sft
    model_dir = work / "model"
    student = StudentConfig(model=str(model_dir), method=method, lora_r=8, batch_size=TRAIN_BATCH,
                            epochs=float(TRAIN_EPOCHS), max_length=128, warmup_steps=1, checkpoint_every=1000,
                            report_to=[])
    rows = sft_rows()
    sft_file = work / f"{method}.jsonl"
    sft_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_sft(Config(data=DataConfig(), student=student), sft_file, work / f"train-{method}")
    seconds = result["train_seconds"]
    if seconds <= 0:
        return f"{result['steps']} steps in under 0.1 s (too few to time)"
    _, tokenizer = load_model(str(model_dir))
    tokens = sum(len(e["input_ids"]) for e in tokenise(tokenizer, rows, student.max_length)) * TRAIN_EPOCHS
    where = f"cuda ({torch.cuda.max_memory_allocated() / 2**20:.0f} MiB peak)" \
        if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0 else "the CPU"
    return (f"{result['steps'] / seconds:.2f} steps/s, {tokens / seconds:.0f} tokens/s "
            f"({result['steps']} steps in {seconds} s, on {where})")


def sample_transformers(work: Path) -> str:
    """16 sampled rows of TransformersGenerator (temperature 1, as the teacher samples: the draw from each row's CPU
    random stream inside the model's device context is part of what is checked), as the product loads and calls it."""
    import torch
    from edgedistill import device
    from edgedistill.generation import Sampling
    from edgedistill.generation.transformers import TransformersGenerator
    from edgedistill.models import load_model
    placement = device.choose()
    model, tokenizer = load_model(str(work / "model"))          # on `placement`: the GPU in its compute dtype
    generator = TransformersGenerator(model, tokenizer)
    sampling = Sampling(max_new_tokens=SAMPLE_TOKENS, temperature=1.0, stop_after_answer=False, seed=0)
    generator.generate(conversations(2), sampling, batch_size=2)                  # warm-up: kernels, caches
    before, started = generator.generated_tokens, time.perf_counter()
    generator.generate(conversations(), sampling, batch_size=SAMPLE_ROWS)
    if placement.on_gpu:
        torch.cuda.synchronize()
    seconds, tokens = time.perf_counter() - started, generator.generated_tokens - before
    weights = next(model.parameters())
    return (f"{tokens / seconds:.0f} tokens/s ({tokens} tokens, {SAMPLE_ROWS} rows; weights on {weights.device} in "
            f"{str(weights.dtype).removeprefix('torch.')})")


def vllm(work: Path) -> str:
    """The vLLM backend's load and one generate of 16 rows (eager mode: no graph capture to wait for)."""
    from edgedistill.generation import Sampling
    from edgedistill.generation.vllm import load_vllm_generator
    started = time.perf_counter()
    generator = load_vllm_generator(str(work / "model"), gpu_memory_utilization=0.3, max_model_len=512,
                                    enforce_eager=True)
    loaded = time.perf_counter()
    generator.generate(conversations(), Sampling(max_new_tokens=SAMPLE_TOKENS, stop_after_answer=False))
    seconds = time.perf_counter() - loaded
    return (f"{generator.generated_tokens / seconds:.0f} tokens/s ({generator.generated_tokens} tokens, "
            f"{SAMPLE_ROWS} rows; load {loaded - started:.1f} s)")


HEAVY_PATHS = {"train_lora": lambda work: train(work, "lora"), "train_full": lambda work: train(work, "full"),
               "sample_transformers": sample_transformers, "vllm": vllm}


def run_child(name: str, work: Path) -> int:
    """The child's side: one heavy path, its line printed last on stdout."""
    try:
        text = HEAVY_PATHS[name](work)
    except Exception as exc:   # the line is the report: a path that fails must not cost the other paths theirs
        text = f"error: {one_line(exc)}"
    print(f"{name}: {text}", flush=True)
    return 0


# --- the parent ---

def one_line(exc: BaseException) -> str:
    message = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


def outcome_of(text: str) -> Outcome:
    for kind, start in (("no_gpu", NO_GPU), ("not_installed", NOT_INSTALLED), ("errors", "error:"),
                        ("skipped", OUT_OF_TIME)):
        if text.startswith(start):
            return Outcome(kind, text)
    return Outcome("ran", text)


def run_check(name: str, has_gpu: bool) -> Outcome:
    check = {"device": check_device, "llama_cpp_cuda": check_llama_cpp, "onnxruntime_genai_cuda": check_onnx}[name]
    try:
        return outcome_of(check(has_gpu))
    except NoGpu:
        return Outcome("no_gpu", NO_GPU)
    except NotInstalled:
        return Outcome("not_installed", NOT_INSTALLED)
    except Exception as exc:   # one line per path, never a traceback
        return Outcome("errors", f"error: {one_line(exc)}")


def run_heavy(name: str, work: Path, seconds: float) -> Outcome:
    """The path in a process of its own, in a session of its own so that a timeout ends what it started too
    (vLLM's engine process)."""
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--one", name, "--work", str(work)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        return Outcome("errors", f"error: not done within its share of {seconds:.0f} s (stopped)")
    finally:
        end_session(child)
    lines = [line.removeprefix(f"{name}: ") for line in out.splitlines() if line.startswith(f"{name}: ")]
    if lines:
        return outcome_of(lines[-1])
    last = (err.strip().splitlines() or ["no output"])[-1][:300]
    return Outcome("errors", f"error: the process ended with code {child.returncode}: {last}")


def end_session(child: subprocess.Popen) -> None:
    """The child and whatever it left running (an engine process holding GPU memory the next path needs)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:     # all of them have ended already
        pass
    child.communicate()


def heavy_precondition(name: str, has_gpu: bool, run_on_cpu: bool) -> Outcome | None:
    """The outcome a heavy path has without running: no GPU, or its runtime missing."""
    if not (has_gpu or run_on_cpu):
        return Outcome("no_gpu", NO_GPU)
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        return Outcome("not_installed", NOT_INSTALLED)
    return None


def report(name: str, outcome: Outcome, counts: dict) -> None:
    counts[outcome.kind] += 1
    print(f"{name}: {outcome.text}", flush=True)


def run_all(minutes: float, run_on_cpu: bool) -> dict:
    deadline = time.monotonic() + minutes * 60
    counts = dict.fromkeys(("ran", "no_gpu", "not_installed", "errors", "skipped"), 0)
    has_gpu = gpu_found()
    for name in CHECKS:
        report(name, run_check(name, has_gpu), counts)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work, built = Path(folder), False
        for left, name in zip(range(len(HEAVY), 0, -1), HEAVY):
            remaining = deadline - time.monotonic()
            outcome = heavy_precondition(name, has_gpu, run_on_cpu)
            if outcome is None and remaining <= 0:
                outcome = Outcome("skipped", OUT_OF_TIME)
            if outcome is None:
                if not built:       # built once, here, only when some heavy path runs
                    build_tiny_model(work / "model")
                    built = True
                outcome = run_heavy(name, work, max(1.0, (deadline - time.monotonic()) / left))
            report(name, outcome, counts)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="deadline for all paths together (default 8)")
    parser.add_argument("--run-on-cpu", action="store_true",
                        help="run the heavy paths without a GPU too (checks the script; the figures are CPU ones)")
    parser.add_argument("--one", choices=HEAVY, help=argparse.SUPPRESS)       # the child's side of run_heavy
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")     # the lines are the output: no bars between them
    if args.one:
        return run_child(args.one, args.work)
    if not args.minutes > 0:
        parser.error("--minutes must be more than 0")
    from edgedistill import UserError
    try:
        counts = run_all(args.minutes, args.run_on_cpu)
    except UserError as exc:   # EDGEDISTILL_DEVICE set to something that is not a device
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    print("gpu_check: " + " ".join(f"{kind}={count}" for kind, count in counts.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
