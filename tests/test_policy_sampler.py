"""Online RL's vLLM sampler (student/policy_sampler.py) without vLLM: the weights pushed into the engine are the
policy's, LoRA merged in, under the base model's own names; pushed once per step; and asking for vLLM without a
GPU or the package says what to do."""
import copy
import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from edgedistill import UserError
from edgedistill.config import StudentConfig
from edgedistill.generation import Sampling
from edgedistill.student import loop, policy_sampler
from edgedistill.student.policy_sampler import VLLMSampler, policy_weights


class RecordingEngine:
    """vLLM's LLM as the sampler uses it: the in-process model's load_weights, reset_prefix_cache, generate."""

    def __init__(self):
        self.loaded, self.resets, self.prompts = {}, 0, []
        model = types.SimpleNamespace(load_weights=lambda pairs: self.loaded.update(
            {name: tensor.clone() for name, tensor in pairs}))
        runner = types.SimpleNamespace(model=model)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, params, use_tqdm=False):
        self.prompts += prompts
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="Answer: 4", token_ids=[1, 2, 3])])
                for _ in prompts]


def trained_lora_student(model_dir):
    student = loop.load_student(StudentConfig(model=str(model_dir), lora_r=4, precision="fp32"), str(model_dir))
    torch.manual_seed(0)
    with torch.no_grad():      # as if trained: LoRA's B starts at zero, which would make the delta vanish
        for name, parameter in student.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return student


def test_the_pushed_weights_are_the_merged_policy_under_the_base_names(tiny_model_dir):
    student = trained_lora_student(tiny_model_dir)
    before = {name: p.detach().clone() for name, p in student.model.named_parameters()}
    pushed = dict(policy_weights(student))
    merged = copy.deepcopy(student.model).merge_and_unload().state_dict()
    base = load_file(tiny_model_dir / "model.safetensors")
    assert set(pushed) == set(base) - {"lm_head.weight"} or set(pushed) == set(base)     # the model's own names
    changed = [name for name in pushed if not torch.equal(pushed[name], base[name])]
    assert changed and all("proj" in name for name in changed)                 # the adapted layers, merged
    for name, tensor in pushed.items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6)
    assert all(torch.equal(p, before[name]) for name, p in student.model.named_parameters())   # left untouched


def test_weights_go_into_the_engine_once_per_step_then_the_prefix_cache_is_reset(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(
        SamplingParams=lambda **kwargs: types.SimpleNamespace(**kwargs)))
    student = trained_lora_student(tiny_model_dir)
    engine = RecordingEngine()
    sampler = VLLMSampler(student, engine)
    conversations = [[{"role": "user", "content": "2 + 2?"}]] * 3
    sampling = Sampling(max_new_tokens=8, temperature=1.0)
    assert sampler.generate(conversations, sampling, step=0) == ["Answer: 4"] * 3
    sampler.generate(conversations, sampling, step=0)
    assert engine.resets == 1 and len(engine.prompts) == 6          # one push for the step's two samplings
    with torch.no_grad():
        next(p for name, p in student.model.named_parameters() if "lora_B" in name).add_(1.0)
    sampler.generate(conversations, sampling, step=1)
    assert engine.resets == 2
    pushed_now = dict(policy_weights(student))
    assert all(torch.equal(engine.loaded[name], pushed_now[name]) for name in pushed_now)   # the new step's policy


def test_vllm_without_a_gpu_or_the_package_says_what_to_use(tiny_model_dir, monkeypatch):
    student = trained_lora_student(tiny_model_dir)
    online = types.SimpleNamespace(sampler="vllm", vllm_memory=0.3)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        policy_sampler.policy_sampler(online, student, str(tiny_model_dir))
    on_gpu = copy.copy(student)
    on_gpu.placement = types.SimpleNamespace(on_gpu=True, device="cuda:0")
    monkeypatch.setitem(sys.modules, "vllm", None)                    # import fails: not installed
    with pytest.raises(UserError, match="pip install vllm"):
        policy_sampler.policy_sampler(online, on_gpu, str(tiny_model_dir))
