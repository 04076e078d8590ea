"""The teacher's tokens/s at 1, 4 and 16 parallel rows, on the self-generation round's own prompts: size a long
teacher run from it before starting one.

    .venv/bin/python benchmarks/teacher_rows.py                                  # the packaged 1.5B CPU teacher
    .venv/bin/python benchmarks/teacher_rows.py --model smollm2-135m-instruct --rows 1,4,16 --per-row 2

Each setting decodes `per-row x rows` reasoning-first solves of shop-floor train questions (calculator on,
temperature 0.7) on the backend the teacher stage would pick for the model, `rows` at a time (llama.cpp: that many
continuous slots). Nothing else should run beside it. Last line: `tok_s_1=A tok_s_4=B tok_s_16=C` and the
16-row gain over one row.
"""
from __future__ import annotations

import argparse
import time

from edgedistill.generation import Sampling, load_generator
from edgedistill.records import load_questions
from edgedistill.teacher.distill import sampling_backend
from edgedistill.teacher.evolve_prompts import solve


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--rows", default="1,4,16", help="parallel rows to measure, comma-separated")
    parser.add_argument("--per-row", type=int, default=2, help="solves per row at each setting")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    questions = load_questions("shopfloor:train")
    shots = questions[:2]
    generator = load_generator(args.model, backend=sampling_backend(args.model))
    print(f"{args.model} on {generator.backend}; {args.per_row} solves per row, up to {args.max_new_tokens} tokens",
          flush=True)
    rates = {}
    for n in rows:
        conversations = [solve(q.question, shots) for q in questions[10:10 + n * args.per_row]]
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=0.7, stop_after_answer=False, seed=n)
        before, started = generator.generated_tokens, time.time()
        generator.generate(conversations, sampling, batch_size=n)
        seconds, tokens = time.time() - started, generator.generated_tokens - before
        rates[n] = tokens / seconds
        print(f"rows={n:3d} solves={len(conversations):3d} tokens={tokens:5d} seconds={seconds:7.1f} "
              f"tok/s={rates[n]:6.1f}", flush=True)
    print(" ".join(f"tok_s_{n}={rates[n]:.1f}" for n in rows) +
          (f" gain_{rows[-1]}_over_{rows[0]}={rates[rows[-1]] / rates[rows[0]]:.2f}" if len(rows) > 1 else ""))


if __name__ == "__main__":
    main()
