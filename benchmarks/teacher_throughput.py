"""Teacher sampling throughput: our backends vs a plain per-sample `transformers.generate` loop, same run.

    .venv/bin/python benchmarks/teacher_throughput.py                     # SmolLM2-135M, 16 questions x 4 samples
    .venv/bin/python benchmarks/teacher_throughput.py --model path/or/name --questions 32 --samples 8

The teacher's job is k sampled rationales per question. What a user would otherwise write: one `model.generate`
per sample, fp32, batch 1, `do_sample=True`. Ours: every sample of every question in one call of the kernel's
generator (transformers: 64 rows a batch, finished rows leave it; llama.cpp: 16 continuous slots), with the
calculator on. Same prompts, same temperature, same token budget (`--max-new-tokens`, no early stop at the answer
line); generated tokens are counted with the model's tokenizer. The plain loop runs on the first `--plain-samples`
samples only (it is slow) and its tokens/s is extrapolated from them.
Last line: `speedup=<tokens/s of the teacher stage's default backend for this model over the plain loop>`
(`teacher.backend: auto`: a GGUF under 512 MiB samples on transformers, a larger one on llama.cpp).
"""
from __future__ import annotations

import argparse
import time

import torch

from edgedistill.formats import chat
from edgedistill.generation import Sampling, load_generator, render_prompt
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.models import load_model, resolve
from edgedistill.records import load_questions
from edgedistill.teacher.distill import sampling_backend


def plain_loop(model, tokenizer, conversations, max_new_tokens: int, temperature: float) -> tuple[float, int]:
    torch.manual_seed(0)
    tokens, started = 0, time.time()
    for messages in conversations:
        ids = tokenizer(render_prompt(tokenizer, messages), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                 top_k=None, top_p=None, pad_token_id=tokenizer.pad_token_id)
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    return time.time() - started, tokens


def ours(generator, tokenizer, conversations, sampling: Sampling, batch_size: int) -> tuple[float, int]:
    started = time.time()
    texts = generator.generate(conversations, sampling, batch_size=batch_size)
    seconds = time.time() - started
    return seconds, sum(len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="shopfloor:train")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="samples per question (k)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--plain-samples", type=int, default=16, help="samples the slow plain loop runs")
    args = parser.parse_args()
    questions = load_questions(args.data, limit=args.questions)
    conversations = [chat(q) for q in questions for _ in range(args.samples)]
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, stop_after_answer=False)
    model, tokenizer = load_model(args.model)
    print(f"{args.model}: {len(questions)} questions x {args.samples} samples, {args.max_new_tokens} new tokens, "
          f"temperature {args.temperature}, torch threads {torch.get_num_threads()}", flush=True)

    results = {}
    seconds, tokens = plain_loop(model, tokenizer, conversations[:args.plain_samples], args.max_new_tokens,
                                 args.temperature)
    results["plain transformers.generate, batch 1"] = (seconds, tokens)
    results["edgedistill transformers, 64 rows"] = ours(TransformersGenerator(model, tokenizer), tokenizer,
                                                        conversations, sampling, 64)
    default = "edgedistill transformers, 64 rows"
    if resolve(args.model).kind == "gguf":
        generator = load_generator(args.model, backend="llama.cpp")
        results["edgedistill llama.cpp, 16 slots"] = ours(generator, tokenizer, conversations, sampling, 16)
        if sampling_backend(args.model) != "transformers":   # what the teacher stage picks for this model
            default = "edgedistill llama.cpp, 16 slots"

    print(f"{'':40} {'samples':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>7}")
    plain_seconds, plain_tokens = results["plain transformers.generate, batch 1"]
    plain_rate = plain_tokens / plain_seconds
    for name, (seconds, tokens) in results.items():
        count = args.plain_samples if name.startswith("plain") else len(conversations)
        print(f"{name:40} {count:7d} {tokens:7d} {seconds:8.1f} {tokens / seconds:7.1f}"
              f"   x{tokens / seconds / plain_rate:.1f}")
    best = max((n for n in results if not n.startswith("plain")), key=lambda n: results[n][1] / results[n][0])
    print(f"fastest: {best}; default for this model: {default}")
    seconds, tokens = results[default]
    print(f"speedup={tokens / seconds / plain_rate:.2f}")


if __name__ == "__main__":
    main()
