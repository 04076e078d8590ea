"""How llama.cpp's decode scales with rows on this CPU: completion tokens per second at 1, 4 and 16 rows decoded
together, the figure batching across users rests on.

    .venv/bin/python benchmarks/batch_rows.py [--model runs/quickstart/export/student-Q4_K_M.gguf]   # about a minute

Each pass decodes the same 16 held-out shop-floor questions, `rows` at a time (the same continuous-batching loop the
app's scheduler runs: a finished row's slot takes the next question), greedy, with their reasoning (up to --tokens
new tokens each), after one warm-up pass. Tokens per
second counts completion tokens over the wall clock of the pass, prefill included. The last line is
`rows_1_tok_s=A rows_4_tok_s=B rows_16_tok_s=C speedup_16=C/A`.
"""
from __future__ import annotations

import argparse
import os
import time

DEFAULT_MODEL = "runs/quickstart/export/student-Q4_K_M.gguf"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"a GGUF (default {DEFAULT_MODEL})")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per row at most")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()

    from edgedistill.formats import chat
    from edgedistill.generation import Sampling
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.records import load_questions
    generator = LlamaCppGenerator(args.model)
    conversations = [chat(q) for q in load_questions("shopfloor:heldout")]
    sampling = Sampling(max_new_tokens=args.tokens, stop_after_answer=False)
    print(f"model {args.model}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    generator.generate(conversations[:4], sampling, batch_size=4)          # warm-up: context made, pages touched
    rates = {}
    for rows in args.rows:
        before, started = generator.generated_tokens, time.perf_counter()
        generator.generate(conversations[:max(args.rows)], sampling, batch_size=rows)
        seconds = time.perf_counter() - started
        rates[rows] = (generator.generated_tokens - before) / seconds
        print(f"  {rows:>3} rows: {generator.generated_tokens - before:>5} tokens in {seconds:6.2f} s = "
              f"{rates[rows]:7.1f} tokens/s ({rates[rows] / rows:6.1f} per row)", flush=True)
    first, last = rates[args.rows[0]], rates[args.rows[-1]]
    print(" ".join(f"rows_{rows}_tok_s={rate:.1f}" for rows, rate in rates.items()) +
          f" speedup_{args.rows[-1]}={last / first:.2f}")


if __name__ == "__main__":
    main()
