"""Adaptive thinking (docs/algorithms.md#8-adaptive-thinking, perception module): forcing g to 1 (0) decodes
exactly as the model with P_pre (P_post) prepended, and with the model frozen only the soft prompt receives
gradient."""
import importlib.util
import sys
from pathlib import Path

import torch

from edgedistill.formats import rationale_first
from edgedistill.models import load_model
from edgedistill.student.batching import collate, tokenise

SPEC = importlib.util.spec_from_file_location(
    "adaptive_thinking", Path(__file__).resolve().parents[1] / "benchmarks" / "adaptive_thinking.py")
adaptive = importlib.util.module_from_spec(SPEC)   # a research recipe outside the package (its docstring says why)
sys.modules[SPEC.name] = adaptive                  # its dataclasses look their module up there
SPEC.loader.exec_module(adaptive)
SYSTEM = [{"role": "system", "content": "Answer."}]


def rows(n=8, fmt="post"):
    out = []
    for i in range(n):
        target = f"Answer: <<{i}*3={i * 3}>>\nReason: {i} threes."
        out.append({"prompt": SYSTEM + [{"role": "user", "content": f"What is {i} times 3?"}],
                    "completion": [{"role": "assistant",
                                    "content": target if fmt == "post" else rationale_first(target)}]})
    return out


def reference_greedy(model, tokenizer, soft_prompt, messages, n):
    """Greedy decoding without a KV cache: the full embedded sequence, soft prompt first, re-run every token."""
    from edgedistill.generation import render_prompt
    ids = tokenizer.encode(render_prompt(tokenizer, messages), add_special_tokens=False)
    table = model.get_input_embeddings()
    tokens = []
    for _ in range(n):
        embeds = torch.cat([soft_prompt, table(torch.tensor(ids + tokens))])[None]
        token = int(model(inputs_embeds=embeds).logits[0, -1].argmax())
        tokens.append(token)
        if token == tokenizer.eos_token_id:
            break
    return tokens


def test_forcing_g_decodes_as_the_chosen_prompt(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir))
    model.eval()
    cfg = adaptive.AdaptiveConfig(prompt_tokens=4, epochs=1, batch_size=4, probe_steps=20, learning_rate=0.1)
    result = adaptive.run_adaptive(model, tokenizer, rows(fmt="pre"), rows(), tmp_path, cfg)
    assert result["questions"] == 8
    prompts, perception = adaptive.load(tmp_path / "adaptive.safetensors")
    assert not torch.equal(prompts["pre"], prompts["post"])
    messages = rows(1)[0]["prompt"]
    features = adaptive.question_features(model, tokenizer, [messages])
    outputs = {}
    for force, mode in ((1, "pre"), (0, "post")):
        assert adaptive.choose(perception, features, force=force) == [mode]
        with torch.no_grad():
            expected = reference_greedy(model, tokenizer, prompts[mode], messages, 12)
        outputs[mode] = adaptive.generate(model, tokenizer, prompts[mode], messages, max_new_tokens=12)
        assert outputs[mode] == expected
    # the two prompts are different inputs: the test would pass trivially if both decoded alike at every step
    with torch.no_grad():
        ids = torch.tensor([tokenizer.encode("What is 2 times 3?")])
        first = {m: model(inputs_embeds=adaptive.with_prompt(model, prompts[m], ids, torch.ones_like(ids))[0]
                          ).logits[0, -1] for m in prompts}
    assert not torch.allclose(first["pre"], first["post"])


def test_only_the_soft_prompt_receives_gradient(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    adaptive.freeze(model)
    prompt = adaptive.init_soft_prompt(model, 4)
    batch = collate(tokenise(tokenizer, rows(4), 128), tokenizer.pad_token_id)
    adaptive.completion_nll(model, prompt, batch).mean().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_prompt_tuning_lowers_the_loss_and_leaves_the_model(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = rows(8)
    batch = collate(tokenise(tokenizer, data, 128), tokenizer.pad_token_id)
    cfg = adaptive.AdaptiveConfig(prompt_tokens=4, epochs=4, batch_size=4, learning_rate=0.05)
    start = adaptive.init_soft_prompt(model, 4, seed=0)
    tuned = adaptive.train_soft_prompt(model, tokenizer, data, cfg, seed=0)
    with torch.no_grad():
        assert adaptive.completion_nll(model, tuned, batch).mean() < adaptive.completion_nll(model, start, batch).mean()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_perception_learns_a_separable_rule():
    torch.manual_seed(0)
    features = torch.randn(64, 8)
    labels = (features[:, 0] > 0).float()
    perception = adaptive.train_perception(features, labels, steps=300)
    chosen = adaptive.choose(perception, features)
    assert sum((c == "pre") == bool(y) for c, y in zip(chosen, labels)) >= 56     # chance: 32
