"""Training speed: our SFT and DPO against TRL's SFTTrainer and DPOTrainer, in one run, on the same everything.

    .venv/bin/python benchmarks/train_vs_trl.py                 # SmolLM2-135M-Instruct, about 15 minutes on 2 cores

The same for both sides:
- model: the packaged SmolLM2-135M-Instruct, dequantised to fp32, wrapped in the same LoRA (r 16, alpha 32, the seven
  projections, the top 20 of 30 layers as in the quickstart) with identical initial weights;
- data: shop-floor seed questions as answer-first SFT examples, and preference pairs (the right answer against a
  wrong one); TRL is given our token ids (its pre-tokenised input paths), in the same order (sequential sampler);
- batch size (SFT 8 sequences, DPO 4 pairs), max length 320, learning rate (SFT 1e-3, DPO 5e-5, constant so the
  loss curves can be compared), AdamW (0.9, 0.999, 1e-8, no weight decay), gradient clipping at 1, gradient
  checkpointing off, 2 threads, precision bf16 where the CPU has native bf16 (TRL: bf16=True) else fp32 for both.
TRL runs SFT with packing off and on (its "bfd" packing, padding-free) and DPO with its reference log-probabilities
precomputed and not; the better of each counts. Timing: 2 warm-up steps, then 3 runs of 10 steps; tokens/s =
real (non-padding) tokens / seconds, the median of the 3. Losses at step 0 and step 5 of ours and TRL's same-batch
run (packing off) are compared, and the largest difference printed.
Last line: `speedup=<our tokens/s over TRL's, the lower of SFT and DPO>`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from edgedistill.calculator import format_number
from edgedistill.config import StudentConfig
from edgedistill.formats import answer_first_target, chat
from edgedistill.records import load_questions
from edgedistill.student import dpo, loop
from edgedistill.student.batching import collate, tokenise
from edgedistill.device import choose
from edgedistill.student.loop import load_student, train_loop
from edgedistill.student.sft import batch_loss

WARMUP, WINDOW, WINDOWS = 2, 10, 3
STEPS = WARMUP + WINDOW * WINDOWS


def make_data(tokenizer, n_sft: int, n_pairs: int, max_length: int):
    questions = load_questions("shopfloor:train", limit=max(n_sft, n_pairs))
    rows = [{"prompt": chat(q), "completion": [{"role": "assistant", "content": answer_first_target(q)}]}
            for q in questions]
    pair_rows = []
    for q, row in zip(questions, rows):
        right = row["completion"][0]["content"]
        reason = right[right.find("\n"):] if "\n" in right else ""
        try:
            wrong_value = format_number(float(q.answer) + 7)
        except (TypeError, ValueError):
            wrong_value = "unknown"
        pair_rows.append({**row, "chosen": row["completion"],
                          "rejected": [{"role": "assistant", "content": f"Answer: {wrong_value}{reason}"}]})
    sft = tokenise(tokenizer, rows[:n_sft], max_length)
    pairs = dpo.pair_examples(tokenizer, pair_rows[:n_pairs], max_length)
    return sft, pairs


def windows_rate(times: list[float], tokens: list[int]) -> float:
    """Median tokens/s over the 3 windows of 10 steps after the warm-up; times[i] = start of step i, times[-1] end."""
    rates = []
    for w in range(WINDOWS):
        a, b = WARMUP + w * WINDOW, WARMUP + (w + 1) * WINDOW
        rates.append(sum(tokens[a:b]) / (times[b] - times[a]))
    return statistics.median(rates)


def real_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())     # padding-free: one packed row, no padding


def fresh_student(cfg: StudentConfig, model: str):
    torch.manual_seed(0)                      # the same LoRA initial weights on both sides
    return load_student(cfg, model)


# -- ours --------------------------------------------------------------------------------------------------------

def ours_sft(cfg, model, examples):
    student = fresh_student(cfg, model)
    batches = [examples[i:i + cfg.batch_size] for i in range(0, STEPS * cfg.batch_size, cfg.batch_size)]
    times, tokens = [], []

    def micro_loss(step, micro):
        times.append(time.perf_counter())
        batch = collate(batches[step], student.tokenizer.pad_token_id)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch_loss(student, batch, cfg)
    return run_ours(student, cfg, micro_loss, times, tokens)


def ours_dpo(cfg, model, pairs, beta):
    student = fresh_student(cfg, model)
    with tempfile.TemporaryDirectory() as tmp:
        reference = dpo.reference_logps(student, pairs, student.tokenizer.pad_token_id, Path(tmp) / "ref.json")
    n = cfg.dpo.batch_size
    times, tokens = [], []

    def micro_loss(step, micro):
        times.append(time.perf_counter())
        picked = list(range(step * n, (step + 1) * n))
        batch_pairs = [pairs[i] for i in picked]
        tokens.append(sum(len(e["input_ids"]) for pair in batch_pairs for e in pair))
        return dpo.pairs_loss(student, batch_pairs, reference[picked], beta)
    return run_ours(student, dataclasses.replace(cfg, learning_rate=cfg.dpo.learning_rate), micro_loss, times, tokens)


def run_ours(student, cfg, micro_loss, times, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        train_loop(student, Path(tmp), cfg, STEPS, micro_loss)
        times.append(time.perf_counter())
        losses = [json.loads(line)["loss"] for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    return windows_rate(times, tokens), losses


# -- TRL ---------------------------------------------------------------------------------------------------------

def trl_run(kind: str, cfg, model, dataset_rows, amp, **options):
    import datasets
    import trl
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        times: list = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    Base = trl.SFTTrainer if kind == "sft" else trl.DPOTrainer

    class InOrder(Base):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

        if kind == "dpo":
            def _prepare_dataset(self, dataset, *args, **kwargs):   # our token ids, as they are
                return dataset

    student = fresh_student(cfg, model)
    lr = cfg.learning_rate if kind == "sft" else cfg.dpo.learning_rate
    batch = cfg.batch_size if kind == "sft" else cfg.dpo.batch_size
    common = dict(output_dir=tempfile.mkdtemp(), max_steps=STEPS, per_device_train_batch_size=batch,
                  learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                  logging_steps=1, report_to="none", save_strategy="no", bf16=amp is not None, use_cpu=True,
                  gradient_checkpointing=False, max_length=cfg.max_length, seed=0, dataloader_num_workers=0,
                  disable_tqdm=True)
    config = (trl.SFTConfig if kind == "sft" else trl.DPOConfig)(**common, **options)
    clock = Clock()
    clock.times = []
    trainer = InOrder(model=student.model, args=config, train_dataset=datasets.Dataset.from_list(dataset_rows),
                      processing_class=student.tokenizer, callbacks=[clock])
    counts = []
    collator = trainer.data_collator
    trainer.data_collator = lambda examples: (lambda b: counts.append(real_tokens(b)) or b)(collator(examples))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return windows_rate(clock.times, counts), losses


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="1 warm-up step and windows of 2 (checks it runs)")
    parser.add_argument("--only", choices=["sft", "dpo"], help="run one objective's rows (the speedup line then "
                                                               "covers that objective alone)")
    args = parser.parse_args()
    global WARMUP, WINDOW, STEPS
    if args.smoke:
        WARMUP, WINDOW = 1, 2
        STEPS = WARMUP + WINDOW * WINDOWS
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    amp = choose(training=True).amp
    cfg = StudentConfig(model=args.model, lora_layers_fraction=0.67, batch_size=8, max_length=320,
                        learning_rate=1e-3, warmup_steps=0, checkpoint_every=10_000, report_to=[],
                        precision="bf16" if amp else "fp32")
    beta = cfg.dpo.beta
    loop.lr_at = lambda step, total, warmup, peak: peak        # constant, as TRL's "constant" schedule
    tokenizer = fresh_student(cfg, args.model).tokenizer
    sft, pairs = make_data(tokenizer, STEPS * cfg.batch_size, STEPS * cfg.dpo.batch_size, cfg.max_length)
    print(f"{args.model}: LoRA r{cfg.lora_r} on the top 67% of layers, {args.threads} threads, "
          f"{'bf16' if amp else 'fp32'}; SFT {len(sft)} examples in batches of {cfg.batch_size}, DPO {len(pairs)} "
          f"pairs in batches of {cfg.dpo.batch_size}; {WARMUP} warm-up steps, median of {WINDOWS} x {WINDOW} steps",
          flush=True)

    results = {}
    kinds = [args.only.upper()] if args.only else ["SFT", "DPO"]
    if "SFT" in kinds:
        run_sft_rows(results, cfg, args.model, sft, amp)
    if "DPO" in kinds:
        run_dpo_rows(results, cfg, args.model, pairs, amp, beta)
    report(results, kinds, STEPS)


def run_sft_rows(results, cfg, model, sft, amp):
    results["ours SFT"] = ours_sft(cfg, model, sft)
    sft_rows = [{"input_ids": e["input_ids"], "completion_mask": [int(label != -100) for label in e["labels"]]}
                for e in sft]
    results["TRL SFT, packing off"] = trl_run("sft", cfg, model, sft_rows, amp, packing=False,
                                              completion_only_loss=True)
    results["TRL SFT, packing on (bfd)"] = trl_run("sft", cfg, model, sft_rows, amp, packing=True,
                                                   completion_only_loss=True)


def run_dpo_rows(results, cfg, model, pairs, amp, beta):
    results["ours DPO"] = ours_dpo(cfg, model, pairs, beta)
    dpo_rows = []
    for chosen, rejected in pairs:
        prompt_length = sum(label == -100 for label in chosen["labels"])
        dpo_rows.append({"prompt_ids": chosen["input_ids"][:prompt_length],
                         "chosen_ids": chosen["input_ids"][prompt_length:],
                         "rejected_ids": rejected["input_ids"][prompt_length:]})
    results["TRL DPO, reference each step"] = trl_run("dpo", cfg, model, dpo_rows, amp, beta=beta,
                                                      precompute_ref_log_probs=False)
    results["TRL DPO, reference precomputed"] = trl_run("dpo", cfg, model, dpo_rows, amp, beta=beta,
                                                        precompute_ref_log_probs=True)


def report(results, kinds, STEPS):
    print(f"\n{'':34} {'tok/s':>8} {'loss@0':>9} {'loss@5':>9}")
    for name, (rate, losses) in results.items():
        print(f"{name:34} {rate:8.1f} {losses[0]:9.5f} {losses[min(5, len(losses) - 1)]:9.5f}")
    differences = {kind: max(abs(results[f"ours {kind}"][1][i] - results[trl_name][1][i]) for i in (0, min(5, STEPS - 1)))
                   for kind, trl_name in (("SFT", "TRL SFT, packing off"), ("DPO", "TRL DPO, reference precomputed"))
                   if kind in kinds}
    print("largest loss difference at steps 0 and 5 (same batches): "
          + ", ".join(f"{kind} {value:.2e}" for kind, value in differences.items()))
    ratios = {kind: results[f"ours {kind}"][0] / max(rate for name, (rate, _) in results.items()
                                                      if name.startswith(f"TRL {kind}"))
              for kind in kinds}
    print("ours over TRL's better run: " + ", ".join(f"{kind} {value:.2f}x" for kind, value in ratios.items()))
    print(f"speedup={min(ratios.values()):.2f}")


if __name__ == "__main__":
    main()
