"""Where tensors live and in which precision: the one place every stage asks, so no stage places a tensor itself.

    placement = choose("auto", training=True)   # Placement(device, weights dtype, autocast dtype)
    model = placement.put(model)                # weights onto the device (cast to `weights` for inference)
    batch = placement.put(batch)                # tensors in dicts, lists and tuples moved; everything else kept
    with placement.scope():                     # autocast, and new tensors (torch.arange, torch.tensor) made there
        loss = ...
    with placement.full_precision(): ...        # sampling inside a training step: no autocast
    gpu_layers()                                # llama.cpp: every layer on the GPU when its build has one, else 0
    onnx_provider()                             # onnxruntime-genai: "cuda" when its build has CUDA, else None (CPU)

The rules: a CUDA GPU when torch sees one (under `accelerate launch`, the process's own: cuda:LOCAL_RANK), with
bf16 autocast where the GPU has bf16 (Ampere and later) and fp16 weights for inference on older ones; on a CPU, bf16
autocast where the CPU has native bf16 (AVX512-BF16 or AMX: faster than fp32 there, slower elsewhere), else fp32.
Training keeps fp32 weights (the optimizer's master copy) and computes in the autocast dtype; inference on a GPU
loads the weights in the compute dtype (half the memory). `EDGEDISTILL_DEVICE=cpu` keeps every stage on the CPU
on a machine with a GPU (and llama.cpp and ONNX off it too); `precision` ("auto", "bf16", "fp16", "fp32") overrides
the dtype.

`tests/test_device.py` reads the stages' source and fails on a `.to(`, `.cuda(` or `device=` outside this module.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "EDGEDISTILL_DEVICE"     # "cpu" forces the CPU; unset or "auto": a GPU when there is one
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class Placement:
    device: str                       # "cpu" or "cuda:N"
    weights: "torch.dtype"            # the dtype weights load in: fp32 to train, the compute dtype for GPU inference
    amp: "torch.dtype | None"         # the autocast dtype; None: no autocast (fp32)

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def put(self, value: Any) -> Any:
        """Tensors and modules moved here (a module also cast to `weights` when it is a float module); dicts, lists
        and tuples walked; anything else (ints, strings, the rows' indices) returned as it is."""
        import torch
        if isinstance(value, torch.nn.Module):
            value = value.to(self.device)
            floating = next((p.dtype for p in value.parameters() if p.dtype.is_floating_point), None)
            return value.to(self.weights) if floating is not None and floating != self.weights else value
        if isinstance(value, torch.Tensor):
            return value.to(self.device, non_blocking=self.on_gpu)
        if isinstance(value, dict):
            return {key: self.put(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)) and any(isinstance(item, (torch.Tensor, dict, list, tuple))
                                                    for item in value):
            return type(value)(self.put(item) for item in value)
        return value

    @property
    def device_type(self) -> str:
        return "cuda" if self.on_gpu else "cpu"

    def autocast(self):
        """Autocast in `amp` (a no-op context in fp32)."""
        import torch
        return torch.autocast(self.device_type, dtype=self.amp, enabled=self.amp is not None)

    @contextlib.contextmanager
    def scope(self):
        """Autocast, and the device every new tensor is made on (`torch.arange`, `torch.tensor` without a device):
        the losses' index and mask tensors land beside the batch without a placement of their own."""
        import torch
        # on the CPU new tensors land there anyway, and the device context costs a Python call per torch call
        with (torch.device(self.device) if self.on_gpu else contextlib.nullcontext()), self.autocast():
            yield

    def full_precision(self):
        """No autocast inside a training step's scope: sampling from the policy (online RL) decodes in the
        weights' dtype, as it does outside training, so a sample does not depend on being drawn mid-step."""
        import torch
        return torch.autocast(self.device_type, enabled=False)

    def describe(self) -> str:
        amp = f", {str(self.amp).removeprefix('torch.')} autocast" if self.amp is not None else ""
        return f"{self.device}, {str(self.weights).removeprefix('torch.')} weights{amp}"


def choose(precision: str = "auto", training: bool = False) -> Placement:
    """The placement for this process. `training`: fp32 weights with autocast (an optimizer steps fp32 weights);
    otherwise, on a GPU, the weights in the compute dtype."""
    import torch
    from edgedistill import UserError
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    on_gpu = gpu_wanted() and torch.cuda.is_available()
    if precision != "auto":
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        if training and amp == torch.float16:
            raise UserError("fp16 training needs a loss scaler the loop does not have: use precision bf16 or fp32")
    elif on_gpu:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        amp = None if training and compute == torch.float16 else compute   # fp16 GPUs train in fp32 (no scaler)
    else:
        amp = torch.bfloat16 if cpu_has_bf16() else None
    if not on_gpu:   # CPU inference keeps fp32 weights: bf16 matmuls there are autocast's
        return Placement("cpu", torch.float32, amp)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return Placement(device, torch.float32 if training or amp is None else amp, amp)


def gpu_wanted() -> bool:
    """False when EDGEDISTILL_DEVICE=cpu asks every stage to stay on the CPU."""
    wanted = os.environ.get(DEVICE_ENV, "auto").strip().lower()
    if wanted not in ("auto", "cpu", "cuda", "gpu", ""):
        from edgedistill import UserError
        raise UserError(f"{DEVICE_ENV}={wanted!r}: use auto (a GPU when there is one) or cpu")
    return wanted != "cpu"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def exact_cpu() -> Placement:
    """fp32 on the CPU whatever the machine has: the export stage converts exact weights to GGUF and ONNX."""
    import torch
    return Placement("cpu", torch.float32, None)


def model_scope(model: "torch.nn.Module"):
    """New tensors made on `model`'s device (a decoding loop feeding it token ids); a no-op on the CPU."""
    import torch
    device = next(model.parameters()).device
    return torch.device(device) if device.type != "cpu" else contextlib.nullcontext()


def on_host():
    """New tensors made on the CPU inside a GPU's device context (a random draw from a CPU generator); a no-op
    outside one, where they land there anyway."""
    import torch
    return torch.device("cpu") if torch.get_default_device().type != "cpu" else contextlib.nullcontext()


def host(tensor: "torch.Tensor") -> "torch.Tensor":
    """`tensor` on the CPU: tokens are drawn there from each row's own CPU random stream, so a seeded sample is
    the same on any device."""
    return tensor.cpu()


def gpu_layers() -> int:
    """llama.cpp's n_gpu_layers: every layer (-1) when llama-cpp-python was built with a GPU backend (CUDA, Metal,
    Vulkan: `CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python`) and the CPU is not asked for; else 0."""
    if not gpu_wanted():
        return 0
    try:
        import llama_cpp
        return -1 if llama_cpp.llama_supports_gpu_offload() else 0
    except (ImportError, AttributeError):
        return 0


def onnx_provider() -> str | None:
    """The onnxruntime-genai execution provider: "cuda" when its build has CUDA (the `gpu` extra installs
    onnxruntime-genai-cuda) and a GPU is there, else None (the CPU)."""
    if not gpu_wanted():
        return None
    try:
        import onnxruntime_genai as og
        import torch
        return "cuda" if og.is_cuda_available() and torch.cuda.is_available() else None
    except (ImportError, AttributeError):
        return None
