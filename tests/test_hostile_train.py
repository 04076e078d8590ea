"""Hostile inputs to the student stages: prompts longer than student.max_length (or max_length 1) leave no token to
train on. Every recipe must say so before its first step, not log loss 0 and merge a copy of the base model; when
only some examples are cut to nothing, it warns with the count and trains on the rest."""
import json

import pytest

from edgedistill import UserError
from edgedistill.config import Config, DataConfig, StudentConfig
from edgedistill.student import batching, dpo, online, policy_sampler, sft

SYSTEM = [{"role": "system", "content": "Write 'Answer:' first."}]
LONG = "The press line ran a shift with a stop for a jammed die, then the same again after lunch. " * 30


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_rows(n=6, long=range(6)):
    """Answer-first SFT rows; the prompts of the rows in `long` are about 600 tokens (over the default 320)."""
    return [{"id": f"q{i}", "prompt": SYSTEM + [{"role": "user",
                                                 "content": (LONG if i in long else "") + f"What is {i} times 3?"}],
             "completion": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}],
             "answer": str(i * 3), "answer_type": "number"} for i in range(n)]


def preference_rows(n=6):
    return [{"id": f"q{i}", "prompt": SYSTEM + [{"role": "user", "content": LONG + f"What is {i} times 3?"}],
             "chosen": [{"role": "assistant", "content": f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."}],
             "rejected": [{"role": "assistant", "content": f"Answer: {i + 3}\nReason: {i} plus three."}]}
            for i in range(n)]


def config_for(model_dir, **student):
    base = dict(model=str(model_dir), batch_size=4, warmup_steps=1, checkpoint_every=100, report_to=[], epochs=1)
    return Config(data=DataConfig(), student=StudentConfig(**{**base, **student}))


def test_sft_with_every_prompt_over_max_length_fails_before_the_first_step(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    with pytest.raises(UserError, match=r"sft\.jsonl: all 6 examples are too long for student\.max_length=320: "
                                        r"their prompts take \d+ to \d+ tokens .*raise student\.max_length or "
                                        r"shorten the prompts"):
        sft.run_sft(config_for(tiny_model_dir), data, tmp_path / "sft")
    assert not (tmp_path / "sft" / "train_log.jsonl").exists() and not (tmp_path / "sft" / "merged").exists()


def test_sft_with_max_length_one_trains_on_nothing_and_says_so(tmp_path, tiny_model_dir):
    config = config_for(tiny_model_dir)
    config.student.max_length = 1          # set after construction: range checks are config.py's, not this test's
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(long=()))
    with pytest.raises(UserError, match=r"all 6 examples are too long for student\.max_length=1"):
        sft.run_sft(config, data, tmp_path / "sft")
    assert not (tmp_path / "sft" / "merged").exists()


def test_sft_with_some_prompts_over_max_length_warns_counts_and_trains(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(long=(1, 4)))
    result = sft.run_sft(config_for(tiny_model_dir), data, tmp_path / "sft")
    assert result["examples_without_tokens"] == 2 and result["examples"] == 6
    err = capsys.readouterr().err
    assert "sft.jsonl: 2 of 6 examples have prompts of 320 tokens or more and train on nothing" in err
    log = [json.loads(line) for line in (tmp_path / "sft" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == result["steps"] == 2 and any(r["tokens"] > 0 for r in log)     # the other 4 train


def test_dpo_with_every_prompt_over_max_length_fails_before_the_reference_pass(tmp_path, tiny_model_dir):
    prefs = write_jsonl(tmp_path / "preferences.jsonl", preference_rows())
    with pytest.raises(UserError, match=r"preferences\.jsonl: all 6 preference pairs are too long for "
                                        r"student\.max_length=320"):
        dpo.run_dpo(config_for(tiny_model_dir), prefs, tmp_path / "dpo", str(tiny_model_dir))
    assert not (tmp_path / "dpo" / "reference_logps.json").exists()
    assert not (tmp_path / "dpo" / "merged").exists()


def test_online_rl_with_every_prompt_over_max_length_fails_before_sampling(tmp_path, tiny_model_dir, monkeypatch):
    config = config_for(tiny_model_dir)
    config.student.online.steps, config.student.online.samples = 1, 2
    config.student.online.prompts_per_step, config.student.online.max_new_tokens = 2, 4
    sampled = []
    real = policy_sampler.TransformersGenerator.generate
    monkeypatch.setattr(policy_sampler.TransformersGenerator, "generate",
                        lambda *a, **k: sampled.append(1) or real(*a, **k))
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows())
    with pytest.raises(UserError, match=r"sft\.jsonl: all 6 questions are too long for student\.max_length=320"):
        online.run_online(config, data, tmp_path / "grao", str(tiny_model_dir))
    assert sampled == [] and not (tmp_path / "grao" / "merged").exists()


def test_adaptive_soft_prompt_with_every_prompt_over_max_length_fails(tiny_model_dir):
    from edgedistill.models import load_model
    from tests.test_adaptive import adaptive  # the research recipe, outside the package (benchmarks/)
    model, tokenizer = load_model(str(tiny_model_dir))
    cfg = adaptive.AdaptiveConfig(prompt_tokens=2, batch_size=4, max_length=64)
    with pytest.raises(UserError, match=r"all 6 examples are too long for AdaptiveConfig\.max_length=64"):
        adaptive.train_soft_prompt(model, tokenizer, sft_rows(), cfg, seed=0)


def test_trainable_tokens_count_only_predicted_completion_positions(smollm_tokenizer):
    rows = sft_rows(n=2, long=(1,))
    examples = batching.tokenise(smollm_tokenizer, rows, 320)
    assert batching.trainable_tokens(examples[1]) == 0                   # the prompt fills max_length
    completion = sum(label != -100 for label in examples[0]["labels"])
    assert batching.trainable_tokens(examples[0]) == completion          # position 0 is the prompt's
    assert examples[1]["prompt_tokens"] > 320 > examples[0]["prompt_tokens"]
    assert batching.check_trainable(examples, 320, "x.jsonl") == 1
