"""Evaluation speed and accuracy: edgedistill's generator vs plain `transformers.generate`, same model, same run.

    .venv/bin/python benchmarks/generate_vs_hf.py --model runs/quickstart/student/merged --limit 48

What a user would otherwise write: one `model.generate` per question, greedy, a fixed token budget, no
calculator, the answer read afterwards. Ours: batched, calculator fills `<<expr=`, each row stops at the end of
its Answer line. Prints seconds, questions per second and pass@1 for both, and the ratios.
"""
from __future__ import annotations

import argparse
import time

import torch

from edgedistill.checkers import extract_answer, is_correct
from edgedistill.formats import chat
from edgedistill.generation import Sampling, render_prompt
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.models import load_model
from edgedistill.records import load_questions


def plain_hf(model, tokenizer, questions, max_new_tokens):
    texts = []
    for q in questions:
        ids = tokenizer(render_prompt(tokenizer, chat(q)), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="shopfloor:heldout")
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="plain generate's budget (answer + reason)")
    args = parser.parse_args()
    questions = load_questions(args.data, limit=args.limit)
    model, tokenizer = load_model(args.model)
    rows = {}
    started = time.time()
    texts = plain_hf(model, tokenizer, questions, args.max_new_tokens)
    rows["transformers.generate"] = (time.time() - started, texts)
    generator = TransformersGenerator(model, tokenizer)
    started = time.time()
    texts = generator.generate([chat(q) for q in questions], Sampling(max_new_tokens=48), batch_size=64)
    rows["edgedistill"] = (time.time() - started, texts)
    print(f"{len(questions)} questions from {args.data}, model {args.model}, torch threads {torch.get_num_threads()}")
    print(f"{'':24} {'seconds':>8} {'q/s':>6} {'pass@1':>7}")
    for name, (seconds, texts) in rows.items():
        accuracy = sum(is_correct(extract_answer(t), q) for t, q in zip(texts, questions)) / len(questions)
        print(f"{name:24} {seconds:8.1f} {len(questions) / seconds:6.2f} {accuracy:7.1%}")
    base, ours = rows["transformers.generate"][0], rows["edgedistill"][0]
    print(f"speed-up: {base / ours:.1f}x")


if __name__ == "__main__":
    main()
