"""The student recipes on a tiny random Llama: DPO from a stored reference, GRAO and pass@k on-policy, stage
chaining, bf16 against fp32, and answer-first early stopping (docs/algorithms.md#2-answer-first-sft-post-thinking)
on a model that learned a target."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from edgedistill.checkers import extract_answer
from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.device import choose
from edgedistill.generation import Sampling
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.models import load_model
from edgedistill.student import batching, dpo, loop, online, run as student_run

SYSTEM = [{"role": "system", "content": "Write 'Answer:' first."}]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_rows(n=6):
    return [{"id": f"q{i}", "prompt": SYSTEM + [{"role": "user", "content": f"What is {i} times 3?"}],
             "completion": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}],
             "answer": str(i * 3), "answer_type": "number"} for i in range(n)]


def preference_rows(n=6):
    return [{"id": f"q{i}", "prompt": SYSTEM + [{"role": "user", "content": f"What is {i} times 3?"}],
             "chosen": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}],
             "rejected": [{"role": "assistant", "content": f"Answer: {i + 3}\nReason: {i} plus three."}]}
            for i in range(n)]


def config_for(model_dir, **student):
    base = dict(model=str(model_dir), batch_size=4, warmup_steps=1, checkpoint_every=100, report_to=[])
    return Config(data=DataConfig(), student=StudentConfig(**{**base, **student}))


def test_dpo_starts_at_log_two_uses_the_stored_reference_and_learns_the_preference(tmp_path, tiny_model_dir):
    config = config_for(tiny_model_dir)
    config.student.dpo.epochs, config.student.dpo.batch_size, config.student.dpo.learning_rate = 4, 3, 5e-3
    prefs = write_jsonl(tmp_path / "preferences.jsonl", preference_rows())
    result = dpo.run_dpo(config, prefs, tmp_path / "dpo", str(tiny_model_dir))
    log = [json.loads(line) for line in (tmp_path / "dpo" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)      # policy = reference at step 0
    assert log[-1]["loss"] < log[0]["loss"] - 0.05 and log[-1]["reward_accuracy"] == 1.0
    stored = json.loads((tmp_path / "dpo" / "reference_logps.json").read_text())
    assert len(stored) == 6 and all(len(pair) == 2 for pair in stored)        # [chosen, rejected] per pair
    # the reference is the starting model's: recomputed from the base it matches what was stored
    student = loop.load_student(config.student, str(tiny_model_dir))
    pairs = dpo.pair_examples(student.tokenizer, preference_rows(), config.student.max_length)
    with torch.no_grad(), student.placement.scope():     # bf16 where training used it
        chosen, rejected = dpo.pair_logps(student.backbone, pairs, student.tokenizer.pad_token_id)
    assert torch.tensor(stored)[:, 0].tolist() == pytest.approx(chosen.tolist(), abs=1e-4)
    assert result["steps"] == 8 and (tmp_path / "dpo" / "merged" / "model.safetensors").exists()


def test_dpo_runs_the_reference_once_then_one_forward_per_step(tmp_path, tiny_model_dir, monkeypatch):
    config = config_for(tiny_model_dir)
    config.student.dpo.batch_size = 6
    calls = []
    real = batching.token_logps
    monkeypatch.setattr(dpo, "token_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    dpo.run_dpo(config, write_jsonl(tmp_path / "p.jsonl", preference_rows()), tmp_path / "dpo", str(tiny_model_dir))
    assert len(calls) == 1 + 1      # reference: 6 pairs in one batch of 8; training: 1 step of 6 pairs


def test_grao_with_every_sample_wrong_imitates_the_reference(tmp_path, tiny_model_dir):
    """A random tiny model never answers right: all rewards 0, A_y > 0, so GRAO is SFT on the reference (plus
    unlikelihood on the samples): the reference completion's likelihood must rise."""
    config = config_for(tiny_model_dir)
    config.student.online.steps, config.student.online.samples = 3, 2
    config.student.online.prompts_per_step, config.student.online.max_new_tokens = 2, 8
    config.student.online.learning_rate = 1e-2
    rows = sft_rows()
    sft = write_jsonl(tmp_path / "sft.jsonl", rows)
    before = reference_likelihood(str(tiny_model_dir), rows)
    online.run_online(config, sft, tmp_path / "grao", str(tiny_model_dir))
    log = [json.loads(line) for line in (tmp_path / "grao" / "train_log.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in log] == [0.0, 0.0, 0.0] and all(r["groups_with_signal"] == 1.0 for r in log)
    assert reference_likelihood(str(tmp_path / "grao" / "merged"), rows) > before + 0.1


def reference_likelihood(model_dir, rows):
    model, tokenizer = load_model(model_dir)
    batch = batching.collate(batching.tokenise(tokenizer, rows, 320), tokenizer.pad_token_id)
    with torch.no_grad():
        logps, mask = batching.token_logps(model, batch)
    return float((logps * mask).sum() / mask.sum())


def test_pass_at_k_without_a_lone_correct_sample_does_not_move_the_model(tmp_path, tiny_model_dir):
    config = config_for(tiny_model_dir)
    config.student.online.objective, config.student.online.steps = "pass", 2
    config.student.online.samples, config.student.online.max_new_tokens = 2, 6
    online.run_online(config, write_jsonl(tmp_path / "sft.jsonl", sft_rows()), tmp_path / "pass", str(tiny_model_dir))
    log = [json.loads(line) for line in (tmp_path / "pass" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["groups_with_signal"] == 0.0 and r["loss"] == 0.0 for r in log)
    base = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(tmp_path / "pass" / "merged" / "model.safetensors")
    for name, tensor in base.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=0)


def test_calculator_tokens_are_left_out_of_the_policy_gradient(smollm_tokenizer):
    examples, chosen = online.sample_examples(smollm_tokenizer, SYSTEM, ["Answer: <<2*3=6>>"], 320)
    flags = chosen[0]
    assert not all(flags) and flags[-1] is False                       # "6>>" was written by the calculator
    ids = [t for t in examples[0]["labels"] if t != -100]
    assert smollm_tokenizer.decode([t for t, f in zip(ids, flags) if not f]) == "6>>"


def test_stages_chain_sft_then_dpo_and_a_rerun_skips_them(tmp_path, tiny_model_dir):
    teacher = tmp_path / "teacher"
    write_jsonl(teacher / "sft" / "train.jsonl", sft_rows())
    write_jsonl(teacher / "preferences" / "train.jsonl", preference_rows())
    config = config_for(tiny_model_dir, stages=["sft", "dpo"], epochs=1)
    result = student_run.run_student(config, teacher, tmp_path / "student")
    assert result["stages"]["sft"]["merged"] == str(tmp_path / "student" / "sft" / "merged")
    assert (tmp_path / "student" / "merged" / "model.safetensors").exists()
    again = student_run.run_student(config, teacher, tmp_path / "student")
    assert all(r.get("skipped") for r in again["stages"].values())


def test_bf16_autocast_loss_tracks_fp32(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    batch = batching.collate(batching.tokenise(tokenizer, sft_rows(), 320), tokenizer.pad_token_id)
    with torch.no_grad():
        fp32 = batching.token_logps(model, batch)[0].sum()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = batching.token_logps(model, batch)[0].sum()
    assert abs(bf16.item() - fp32.item()) / abs(fp32.item()) < 0.01
    assert choose("fp32", training=True).amp is None and choose("bf16", training=True).amp is torch.bfloat16


def test_answer_first_early_stop_gives_the_same_answer_as_decoding_everything(tmp_path, tiny_model_dir):
    """Greedy decoding stopped at the end of the Answer line writes the answer the full decode writes (causality);
    checked on a tiny model that memorised the target, so both really contain an answer."""
    row = sft_rows(3)[2]
    config = config_for(tiny_model_dir, method="full", epochs=80, batch_size=1, learning_rate=2e-2)
    from edgedistill.student.sft import run_sft
    run_sft(config, write_jsonl(tmp_path / "one.jsonl", [row]), tmp_path / "memorise")
    model, tokenizer = load_model(str(tmp_path / "memorise" / "merged"))
    generator = TransformersGenerator(model, tokenizer)
    conversation = row["prompt"]
    full = generator.generate([conversation], Sampling(max_new_tokens=40, stop_after_answer=False))[0]
    short = generator.generate([conversation], Sampling(max_new_tokens=40, stop_after_answer=True))[0]
    assert "Reason:" in full and short == full.split("\n")[0]                  # stopped at the delimiter
    assert extract_answer(short, "number") == extract_answer(full, "number") == "6"


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_under_accelerate_train_like_one_with_the_doubled_batch(tmp_path, tiny_model_dir, mode):
    """DDP or FSDP on CPU (gloo), 2 processes x 3 examples per step against 1 process x 6: the same merged weights
    and losses."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from edgedistill.student.sft import run_sft
    rows = [{**row, "completion": [{"role": "assistant", "content": row["completion"][0]["content"] + " x" * i}]}
            for i, row in enumerate(sft_rows(12))]          # unequal lengths: the token-count scaling matters
    sft = write_jsonl(tmp_path / "sft.jsonl", rows)
    run_sft(config_for(tiny_model_dir, epochs=1, batch_size=6, precision="fp32"), sft, tmp_path / "one")
    worker = Path(__file__).with_name("ddp_sft_worker.py")
    # --multi_gpu is accelerate's multi-process (torchrun) launcher; without a GPU our Accelerator runs gloo on CPUs
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(worker), str(tiny_model_dir), str(sft),
         str(tmp_path / "two"), "3", mode],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-3000:]
    assert launched.stdout.count("processes 2") == 2                         # both ranks trained
    assert f"2 processes, {'FSDP' if mode == 'fsdp' else 'DDP (gloo)'}" in launched.stdout
    one = load_file(tmp_path / "one" / "merged" / "model.safetensors")
    two = load_file(tmp_path / "two" / "merged" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(one[name], base[name]) for name in base)       # training moved the weights
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=0, atol=2e-6)
    logged = [json.loads(line)["loss"] for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["loss"] for line in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(expected, abs=1e-5)


def test_accumulation_sees_every_example_once_per_epoch(tmp_path, tiny_model_dir, monkeypatch):
    """Micro-batches run through the epochs in order: with 3 batches per epoch and 2 micro-batches per step, step 2
    spans the epoch boundary instead of repeating the epoch's first batch."""
    from edgedistill.student import sft
    seen = []
    real = sft.batch_loss

    def recording(student, batch, cfg, frozen=None, denominator=None):
        seen.append(list(batch["index"]))
        return real(student, batch, cfg, frozen, denominator)
    monkeypatch.setattr(sft, "batch_loss", recording)
    config = config_for(tiny_model_dir, batch_size=2, accumulation=2, epochs=2)
    result = sft.run_sft(config, write_jsonl(tmp_path / "sft.jsonl", sft_rows(6)), tmp_path / "sft")
    assert result["steps"] == 3                               # 6 micro-batches of 2 = 2 epochs of 6 examples
    assert len(seen) == 6
    for epoch in (seen[:3], seen[3:]):
        assert sorted(i for batch in epoch for i in batch) == list(range(6))
