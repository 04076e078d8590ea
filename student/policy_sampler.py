"""Where online RL draws its samples from the current policy.

    sampler = policy_sampler(online, student, model_spec, allow_network)
    texts = sampler.generate(conversations, sampling, step)

- `transformers` (the default): the policy itself, in the training process, on whatever device it trains on.
- `vllm` (`student.online.sampler: vllm`, a CUDA GPU, `pip install vllm`): a vLLM engine on the same GPU, as
  TRL's "colocate" mode runs it. Before the first sampling of each step the policy's current weights are pushed
  into the engine (LoRA merged in, under the base model's own names) and its prefix cache is reset, so every
  sample comes from the policy being trained. Decoding goes through the product's vLLM loop, calculator included.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch

from edgedistill import UserError
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.generation.vllm import VLLMGenerator


class TransformersSampler:
    def __init__(self, student):
        self.generator = TransformersGenerator(student.model, student.tokenizer)

    def generate(self, conversations: list[list[dict]], sampling: Sampling, step: int) -> list[str]:
        return self.generator.generate(conversations, sampling, batch_size=64)


class VLLMSampler:
    """A vLLM engine in this process (`llm`), kept in step with the policy: weights pushed once per step."""

    def __init__(self, student, llm):
        self.student, self.llm = student, llm
        self.generator = VLLMGenerator(llm, student.tokenizer)
        self.synced_step: int | None = None

    def generate(self, conversations: list[list[dict]], sampling: Sampling, step: int) -> list[str]:
        if step != self.synced_step:
            self.push_weights()
            self.synced_step = step
        return self.generator.generate(conversations, sampling)

    def push_weights(self) -> None:
        model = engine_model(self.llm)
        for name, tensor in policy_weights(self.student):
            model.load_weights([(name, tensor)])
        self.llm.reset_prefix_cache()      # cached prompts were computed with the old weights


@torch.no_grad()
def policy_weights(student) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the base model's own names. With LoRA, each adapted weight is the base weight plus
    the adapter's delta, computed apart: merging in place and unmerging would leave the frozen base a rounding off
    after every step. PEFT's prefixes are removed and the adapters' own tensors skipped."""
    model = student.model
    if not student.is_lora:
        yield from ((name, parameter.detach()) for name, parameter in model.named_parameters())
        return
    from peft.tuners.lora import LoraLayer
    deltas = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and hasattr(module, "base_layer"):
            deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(adapter)
                                                      for adapter in module.active_adapters)
    for name, parameter in model.named_parameters():
        if ".lora_" in name or "original_module" in name:
            continue
        value = parameter.detach() + deltas[name] if name in deltas else parameter.detach()
        yield base_name(name), value


def base_name(peft_name: str) -> str:
    """`base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight` -> `model.layers.0.self_attn.q_proj.weight`."""
    return (peft_name.removeprefix("base_model.model.").replace(".base_layer", "")
            .replace("modules_to_save.default.", ""))


def engine_model(llm):
    """The model inside an in-process vLLM engine (the attribute path TRL's colocate mode loads weights through)."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        import vllm
        raise UserError(f"this vLLM ({getattr(vllm, '__version__', '?')}) does not expose its model in-process, so the "
                        f"policy's weights cannot be pushed into it: use student.online.sampler: transformers, or "
                        f"the vLLM version TRL's colocate mode supports") from None


def policy_sampler(online, student, model_spec: str, allow_network: bool = False):
    """The sampler `student.online.sampler` names, checked before any step: vLLM needs a CUDA GPU and the package."""
    if online.sampler == "transformers":
        return TransformersSampler(student)
    if not student.placement.on_gpu:
        raise UserError("student.online.sampler: vllm needs a CUDA GPU (this process trains on "
                        f"{student.placement.device}): use sampler: transformers")
    from edgedistill.generation.vllm import load_vllm_generator
    from edgedistill.student.loop import shard
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")   # the engine in this process: its model reachable
    rank, world = shard()
    options = {"distributed_executor_backend": "external_launcher"} if world > 1 else {}
    from edgedistill.models import resolve
    folder = str(resolve(model_spec, allow_network).hf_folder())    # a GGUF base: its dequantised folder
    engine = load_vllm_generator(folder, allow_network, seed=rank, gpu_memory_utilization=online.vllm_memory,
                                 **options)       # the teacher's loader, which says how to install vLLM
    return VLLMSampler(student, engine.llm)
