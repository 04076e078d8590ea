"""The one device helper (edgedistill/device.py): what it chooses on this CPU and, with torch told there is a GPU,
on one; what `put` moves; and no stage placing a tensor without it."""
import re
from pathlib import Path

import pytest
import torch

from edgedistill import UserError
from edgedistill import device
from edgedistill.device import Placement, choose

ROOT = Path(__file__).resolve().parents[1]
PLACEMENT = re.compile(r"\.to\(|\.cuda\(|\bdevice(_map)?\s*=|set_default_device|torch\.device\(|[\"']device[\"']\s*:")


@pytest.fixture
def a_gpu(monkeypatch):
    """torch believes in two CUDA devices with bf16 (nothing is run on them)."""
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_on_this_cpu_training_and_inference_stay_on_the_cpu_in_fp32_weights(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for training in (True, False):
        placement = choose("auto", training=training)
        assert placement.device == "cpu" and placement.weights is torch.float32
        assert placement.amp is (torch.bfloat16 if device.cpu_has_bf16() else None)
    assert choose("fp32").amp is None and choose("bf16").amp is torch.bfloat16


def test_a_gpu_trains_in_bf16_autocast_over_fp32_weights_and_infers_in_bf16(a_gpu):
    assert choose(training=True) == Placement("cuda:0", torch.float32, torch.bfloat16)
    assert choose() == Placement("cuda:0", torch.bfloat16, torch.bfloat16)
    assert choose("fp32") == Placement("cuda:0", torch.float32, None)        # parity's exact reference


def test_a_gpu_without_bf16_infers_in_fp16_and_trains_in_fp32(a_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose() == Placement("cuda:0", torch.float16, torch.float16)
    assert choose(training=True) == Placement("cuda:0", torch.float32, None)   # no loss scaler: no fp16 training


def test_each_accelerate_process_gets_its_own_gpu_and_the_cpu_can_be_forced(a_gpu, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose(training=True).device == "cuda:1"
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert choose(training=True).device == "cpu" and device.gpu_layers() == 0 and device.onnx_provider() is None


def test_bad_settings_say_what_to_use(monkeypatch):
    with pytest.raises(UserError, match="auto, bf16, fp16, fp32"):
        choose("half")
    monkeypatch.setenv(device.DEVICE_ENV, "tpu")
    with pytest.raises(UserError, match="auto .* or cpu"):
        choose()


def test_put_moves_tensors_in_containers_and_casts_a_module_for_inference():
    placement = Placement("cpu", torch.bfloat16, None)
    batch = {"ids": torch.ones(2, 3), "index": [4, 5], "pairs": (torch.zeros(1), "x"), "name": "b"}
    moved = placement.put(batch)
    assert moved["index"] == [4, 5] and moved["name"] == "b" and moved["pairs"][1] == "x"
    assert torch.equal(moved["ids"], batch["ids"])
    module = placement.put(torch.nn.Linear(2, 2))
    assert module.weight.dtype is torch.bfloat16


def test_the_training_scope_autocasts_where_asked_and_sampling_leaves_it():
    placement = Placement("cpu", torch.float32, torch.bfloat16)
    a = torch.randn(4, 4)
    with placement.scope():
        assert (a @ a).dtype is torch.bfloat16
        with placement.full_precision():
            assert (a @ a).dtype is torch.float32
    with Placement("cpu", torch.float32, None).scope():
        assert (a @ a).dtype is torch.float32


def stage_sources():
    for folder in ("edgedistill", "teacher", "student", "export", "serve", "evals"):
        yield from (p for p in sorted((ROOT / folder).rglob("*.py")) if p != ROOT / "edgedistill" / "device.py")


def test_no_stage_places_a_tensor_except_through_the_device_helper():
    """`.to(`, `.cuda(`, `device=`, `device_map=` and device contexts belong in edgedistill/device.py: a stage that places a tensor itself puts it
    where the helper's rules (the GPU, the process's own GPU under accelerate, EDGEDISTILL_DEVICE) do not reach."""
    assert PLACEMENT.search("x = batch.to(device)") and PLACEMENT.search("torch.zeros(2, device=d)")
    assert PLACEMENT.search("model.cuda()") and not PLACEMENT.search("self.placement.put(x)")
    assert PLACEMENT.search('from_pretrained(f, device_map="auto")') and PLACEMENT.search('{"device": "cuda"}')
    assert PLACEMENT.search("with torch.device(d):") and PLACEMENT.search("torch.set_default_device(d)")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in stage_sources()
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if PLACEMENT.search(line.split("#")[0])]
    assert len(list(stage_sources())) > 50
    assert not found, "place tensors through edgedistill.device:\n" + "\n".join(found)


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_the_accelerate_configs_are_ones_accelerate_reads(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig
    config = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.mixed_precision == "no"   # the loop autocasts itself
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["gradient_clipping"] == 1.0


def test_tokens_are_drawn_on_the_cpu_inside_a_gpu_device_context():
    """The transformers loop decodes inside its model's device context; a draw there must still use the row's CPU
    random stream (on a GPU, torch.rand with a CPU generator in a CUDA context fails). The meta device stands in."""
    from edgedistill.generation import Sampling
    from edgedistill.generation.decoding import choose_tokens
    logits = torch.randn(3, 50)
    sampling = Sampling(max_new_tokens=4, temperature=1.0, seed=7)
    expected = choose_tokens(logits, sampling, torch.Generator().manual_seed(7))
    with torch.device("meta"):
        assert choose_tokens(logits, sampling, torch.Generator().manual_seed(7)) == expected
