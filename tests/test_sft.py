"""SFT recipe: completion log-probabilities, prompt masking, batching, checkpoint resume with the same loss curve."""
import json

import pytest
import torch

from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.generation import encode_completion, render_prompt
from edgedistill.student import batching, loop, sft


def test_token_logps_are_left_aligned_per_row_and_answer_mask_covers_the_answer_line():
    values, rows = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([0, 0, 0, 2, 2])
    padded, mask = batching.pad_by_row(values, rows, 3)
    assert padded.tolist() == [[1, 2, 3], [0, 0, 0], [4, 5, 0]] and mask.tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 0]]
    assert batching.answer_mask(mask, torch.tensor([2, 0, 5])).tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 0]]


def test_completion_logits_equal_full_forward_at_completion_positions(tiny_model_dir):
    from edgedistill.models import load_model
    model, tok = load_model(str(tiny_model_dir))
    rows = [{"prompt": [{"role": "user", "content": "What is 6 times 7?"}],
             "completion": [{"role": "assistant", "content": "Answer: <<6*7=42>>\nReason: six sevens."}]},
            {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Answer: 1"}]}]
    batch = batching.collate(batching.tokenise(tok, rows, 256), tok.pad_token_id)
    logits, targets, rows_of = batching.completion_logits(model, batch)
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
    examples = batching.tokenise(tok, rows, 256)
    frozen = batching.FrozenBottom(model.get_decoder(), n_frozen=1)
    first_epoch = batching.collate(examples[:2], tok.pad_token_id)
    batching.completion_logits(model, first_epoch, frozen)
    batching.completion_logits(model, batching.collate(examples[2:], tok.pad_token_id), frozen)
    assert sorted(frozen.states) == [0, 1, 2]
    second_epoch = batching.collate([examples[2], examples[0]], tok.pad_token_id)
    calls = []
    hook = model.get_decoder().layers[0].register_forward_hook(lambda *a: calls.append(1))
    cached, _, _ = batching.completion_logits(model, second_epoch, frozen)
    hook.remove()
    assert calls == []                                  # the frozen layer did not run again
    full, _, _ = batching.completion_logits(model, second_epoch)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    assert len(model.get_decoder().layers) == model.config.num_hidden_layers   # restored after the fast path


def test_tokenise_masks_the_prompt_and_appends_eos(smollm_tokenizer):
    tok = smollm_tokenizer
    row = {"prompt": [{"role": "user", "content": "Q?"}],
           "completion": [{"role": "assistant", "content": "Answer: <<2*3=6>>"}]}
    example = batching.tokenise(tok, [row], 512)[0]
    prompt_len = len(tok.encode(render_prompt(tok, row["prompt"]), add_special_tokens=False))
    assert example["labels"][:prompt_len] == [-100] * prompt_len
    assert example["labels"][prompt_len:] == encode_completion(tok, "Answer: <<2*3=6>>") + [tok.eos_token_id]
    assert example["input_ids"][prompt_len:] == example["labels"][prompt_len:]
    both = {**row, "completion": [{"role": "assistant", "content": "Answer: <<2*3=6>>\nReason: two threes."}]}
    example = batching.tokenise(tok, [both], 512)[0]
    assert example["answer_tokens"] == len(encode_completion(tok, "Answer: <<2*3=6>>\n"))
    assert example["labels"][prompt_len:-1] == encode_completion(tok, both["completion"][0]["content"])


def test_batches_are_a_function_of_seed_and_epoch_and_cover_every_example():
    lengths = [5, 9, 3, 7, 1, 8, 2, 6, 4, 10, 11]
    a = batching.batches_for_epoch(lengths, 3, seed=1, epoch=0)
    assert a == batching.batches_for_epoch(lengths, 3, seed=1, epoch=0)
    assert a != batching.batches_for_epoch(lengths, 3, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(len(lengths)))


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert loop.lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert loop.lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert loop.lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def _sft_file(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} times 3?"}],
             "completion": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}]}
            for i in range(12)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_interrupted_training_resumes_to_the_same_weights_and_loss_curve(tmp_path, tiny_model_dir, monkeypatch):
    from safetensors.torch import load_file
    config = Config(data=DataConfig(), student=StudentConfig(model=str(tiny_model_dir), epochs=2, batch_size=4,
                                                             checkpoint_every=2, warmup_steps=1))
    sft_file = _sft_file(tmp_path)
    sft.run_sft(config, sft_file, tmp_path / "straight")
    reference = load_file(tmp_path / "straight" / "merged" / "model.safetensors")

    real_write = loop.MetricsLog.write
    def write_then_die(self, step, values):
        real_write(self, step, values)
        if step == 5:
            raise KeyboardInterrupt   # killed one step after the step-4 checkpoint, step 5 already logged
    monkeypatch.setattr(loop.MetricsLog, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        sft.run_sft(config, sft_file, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "step-000004").is_dir()
    monkeypatch.setattr(loop.MetricsLog, "write", real_write)
    sft.run_sft(config, sft_file, tmp_path / "resumed")
    resumed = load_file(tmp_path / "resumed" / "merged" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)
    assert not (tmp_path / "resumed" / "checkpoints").exists()
    curves = [[json.loads(line) for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
              for run in ("straight", "resumed")]
    assert [r["step"] for r in curves[1]] == list(range(1, 7))         # step 5 logged once, after the resume
    assert [r["loss"] for r in curves[1]] == pytest.approx([r["loss"] for r in curves[0]], abs=1e-6)
    assert (tmp_path / "straight" / "tensorboard").is_dir()             # TensorBoard by default
