"""SFT recipe: the loss against hand-computed values, prompt masking, batching, checkpoint resume."""
import json
import math

import pytest
import torch

from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.generate import encode_completion, render_prompt
from student import sft


def test_completion_loss_matches_hand_computed_nll():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    # token 1: p = 1/2 -> ln 2 ; token 2: p = 3/4 -> -ln 0.75
    assert sft.completion_loss(logits, targets).item() == pytest.approx((math.log(2) - math.log(0.75)) / 2)
    weighted = sft.completion_loss(logits, targets, torch.tensor([1.0, 2.0])).item()
    assert weighted == pytest.approx((math.log(2) - 2 * math.log(0.75)) / 2)


def test_completion_logits_equal_full_forward_at_completion_positions(tiny_model_dir):
    from edgedistill.models import load_model
    model, tok = load_model(str(tiny_model_dir))
    rows = [{"prompt": [{"role": "user", "content": "What is 6 times 7?"}],
             "completion": [{"role": "assistant", "content": "Answer: <<6*7=42>>\nReason: six sevens."}]},
            {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Answer: 1"}]}]
    batch = sft.collate(sft.tokenise(tok, rows, 256), tok.pad_token_id)
    logits, targets, rows_of = sft.completion_logits(model, batch)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = batch["labels"][:, 1:] != -100
    torch.testing.assert_close(logits, full[mask], rtol=1e-4, atol=1e-4)
    assert targets.tolist() == batch["labels"][:, 1:][mask].tolist()
    assert rows_of.tolist() == [0] * int(mask[0].sum()) + [1] * int(mask[1].sum())


def test_frozen_bottom_reuses_hidden_states_exactly_whatever_the_batch(tiny_model_dir):
    """Second epoch: the cached states after the frozen layers give the logits a full forward gives, even when the
    example now shares its batch with a longer one (more padding)."""
    from edgedistill.models import load_model
    model, tok = load_model(str(tiny_model_dir))
    rows = [{"prompt": [{"role": "user", "content": text}], "completion": [{"role": "assistant", "content": answer}]}
            for text, answer in [("What is 6 times 7?", "Answer: <<6*7=42>>\nReason: six sevens."), ("Hi", "Answer: 1"),
                                 ("A much longer question about the press line and its hourly output?", "Answer: 3")]]
    examples = sft.tokenise(tok, rows, 256)
    frozen = sft.FrozenBottom(model.get_decoder(), n_frozen=1)
    first_epoch = sft.collate(examples[:2], tok.pad_token_id)
    sft.completion_logits(model, first_epoch, frozen)
    sft.completion_logits(model, sft.collate(examples[2:], tok.pad_token_id), frozen)
    assert sorted(frozen.states) == [0, 1, 2]
    second_epoch = sft.collate([examples[2], examples[0]], tok.pad_token_id)
    calls = []
    hook = model.get_decoder().layers[0].register_forward_hook(lambda *a: calls.append(1))
    cached, _, _ = sft.completion_logits(model, second_epoch, frozen)
    hook.remove()
    assert calls == []                                  # the frozen layer did not run again
    full, _, _ = sft.completion_logits(model, second_epoch)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    assert len(model.get_decoder().layers) == model.config.num_hidden_layers   # restored after the fast path


def test_tokenise_masks_the_prompt_and_appends_eos(smollm_tokenizer):
    tok = smollm_tokenizer
    row = {"prompt": [{"role": "user", "content": "Q?"}],
           "completion": [{"role": "assistant", "content": "Answer: <<2*3=6>>"}]}
    example = sft.tokenise(tok, [row], 512)[0]
    prompt_len = len(tok.encode(render_prompt(tok, row["prompt"]), add_special_tokens=False))
    assert example["labels"][:prompt_len] == [-100] * prompt_len
    assert example["labels"][prompt_len:] == encode_completion(tok, "Answer: <<2*3=6>>") + [tok.eos_token_id]
    assert example["input_ids"][prompt_len:] == example["labels"][prompt_len:]


def test_batches_are_a_function_of_seed_and_epoch_and_cover_every_example():
    lengths = [5, 9, 3, 7, 1, 8, 2, 6, 4, 10, 11]
    a = sft.batches_for_epoch(lengths, 3, seed=1, epoch=0)
    assert a == sft.batches_for_epoch(lengths, 3, seed=1, epoch=0)
    assert a != sft.batches_for_epoch(lengths, 3, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(lengths)))


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert sft.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert sft.lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert sft.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def _sft_file(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} times 3?"}],
             "completion": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}]}
            for i in range(12)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file
    config = Config(data=DataConfig(), student=StudentConfig(model=str(tiny_model_dir), epochs=2, batch_size=4,
                                                             checkpoint_every=2, warmup_steps=1))
    sft_file = _sft_file(tmp_path)
    sft.run_sft(config, sft_file, tmp_path / "straight")
    reference = load_file(tmp_path / "straight" / "merged" / "model.safetensors")

    real_save = sft.save_checkpoint
    def save_then_die(root, model, optimizer, step):
        real_save(root, model, optimizer, step)
        if step == 4:
            raise KeyboardInterrupt   # as if killed right after the step-4 checkpoint
    monkeypatch.setattr(sft, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        sft.run_sft(config, sft_file, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "step-000004").is_dir()
    monkeypatch.setattr(sft, "save_checkpoint", real_save)
    sft.run_sft(config, sft_file, tmp_path / "resumed")
    resumed = load_file(tmp_path / "resumed" / "merged" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)
    assert not (tmp_path / "resumed" / "checkpoints").exists()
