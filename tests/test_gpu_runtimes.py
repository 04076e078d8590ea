"""llama.cpp and onnxruntime-genai on a GPU when their builds have one, and benchmarks/gpu_check.py.

No GPU here: the GPU builds are stood in for by patching what edgedistill asks them (llama_supports_gpu_offload,
is_cuda_available), and the model loaders by stand-ins that record what they were handed. The CPU behaviour is
checked on the real runtimes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgedistill import device

ROOT = Path(__file__).resolve().parents[1]
GPU_PATHS = ("llama_cpp_cuda", "onnxruntime_genai_cuda", "train_lora", "train_full", "sample_transformers", "vllm")
SUMMARY = re.compile(r"gpu_check: ran=\d+ no_gpu=\d+ not_installed=\d+ errors=\d+ skipped=\d+")


class Handed(Exception):
    """Raised by a stand-in model loader once it has recorded its arguments: nothing is loaded."""


@pytest.fixture
def gpu_builds(monkeypatch):
    """llama.cpp and onnxruntime-genai as their GPU builds answer, with no EDGEDISTILL_DEVICE set."""
    llama_cpp = pytest.importorskip("llama_cpp")
    og = pytest.importorskip("onnxruntime_genai")
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(og, "is_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # a GPU is there too (nothing runs on it)
    return llama_cpp, og


@pytest.fixture
def llama_kwargs(monkeypatch):
    """llama_cpp.Llama replaced by a stand-in: the dict fills with the keyword arguments it was built with."""
    llama_cpp = pytest.importorskip("llama_cpp")
    handed: dict = {}

    def stand_in(**kwargs):
        handed.update(kwargs)
        raise Handed
    monkeypatch.setattr(llama_cpp, "Llama", stand_in)
    return handed


class RecordingConfig:
    """og.Config's stand-in: the calls the loader makes on it, in order."""
    calls: list = []

    def __init__(self, folder: str):
        RecordingConfig.calls = [("Config", folder)]

    def __getattr__(self, name: str):
        return lambda *args: RecordingConfig.calls.append((name, *args))


@pytest.fixture
def onnx_folder(tmp_path, monkeypatch):
    """A genai_config.json the checks pass, and og.Config / og.Model replaced by stand-ins."""
    og = pytest.importorskip("onnxruntime_genai")
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "genai_config.json").write_text(json.dumps(
        {"model": {"type": "llama", "eos_token_id": 2, "context_length": 512,
                   "decoder": {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []}}}}))
    monkeypatch.setattr(og, "Config", RecordingConfig)
    monkeypatch.setattr(og, "Model", lambda config: "model")
    return folder


def provider_calls() -> list:
    return [call for call in RecordingConfig.calls if call[0] in ("clear_providers", "append_provider")]


def test_gpu_check_runs_end_to_end_without_a_gpu():
    env = dict(os.environ)
    env.pop(device.DEVICE_ENV, None)
    import torch
    if torch.cuda.is_available():      # a machine with a GPU: the CPU is asked for, so the lines are the same
        env[device.DEVICE_ENV] = "cpu"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                            text=True, timeout=300, cwd=ROOT, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("device: cpu")
    assert [line for line in lines if line.split(":")[0] in GPU_PATHS] == [f"{name}: no GPU found"
                                                                           for name in GPU_PATHS]
    assert SUMMARY.fullmatch(lines[-1]) and lines[-1].startswith("gpu_check: ran=1 no_gpu=6 ")


def test_gpu_check_refuses_a_bad_device_setting_in_one_line():
    env = {**os.environ, device.DEVICE_ENV: "tpu"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                            text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "EDGEDISTILL_DEVICE='tpu'" in result.stderr


def test_the_cpu_setting_keeps_llama_cpp_and_onnx_off_a_gpu_build(gpu_builds, monkeypatch):
    monkeypatch.setenv(device.DEVICE_ENV, "cpu")
    assert device.gpu_layers() == 0
    assert device.onnx_provider() is None


def test_a_cpu_build_of_llama_cpp_loads_every_layer_on_the_cpu(monkeypatch, llama_kwargs, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    with pytest.raises(Handed):
        LlamaCppGenerator(str(tmp_path / "model.gguf"), threads=2)
    assert llama_kwargs["n_gpu_layers"] == 0 and llama_kwargs["n_threads"] == 2   # what llama.cpp defaults to


def test_a_gpu_build_of_llama_cpp_gets_every_layer(gpu_builds, llama_kwargs, tmp_path):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    assert device.gpu_layers() == -1
    with pytest.raises(Handed):
        LlamaCppGenerator(str(tmp_path / "model.gguf"))
    assert llama_kwargs["n_gpu_layers"] == -1


def test_an_explicit_layer_count_wins(gpu_builds, llama_kwargs, tmp_path):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    with pytest.raises(Handed):
        LlamaCppGenerator(str(tmp_path / "model.gguf"), gpu_layers=0)
    assert llama_kwargs["n_gpu_layers"] == 0


def test_evaluation_and_the_speed_probe_offload_by_default(gpu_builds, llama_kwargs, tmp_path):
    """load_generator (evaluation, the app) and export/probe.py build their LlamaCppGenerator with the default."""
    from edgedistill.export.probe import GgufModel
    from edgedistill.generation import load_generator
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    for build in (lambda: load_generator(str(gguf), backend="llama.cpp"), lambda: GgufModel(str(gguf), 2)):
        llama_kwargs.clear()
        with pytest.raises(Handed):
            build()
        assert llama_kwargs["n_gpu_layers"] == -1


def test_the_real_cpu_build_keeps_its_generator_on_the_cpu(monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("llama-cpp-python here is a GPU build")
    monkeypatch.delenv(device.DEVICE_ENV, raising=False)
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.models import resolve
    generator = LlamaCppGenerator(str(resolve("smollm2-135m-instruct").path), threads=2)
    assert generator.gpu_layers == 0
    assert generator.encode("Answer:")      # the model loaded and tokenises


def test_onnx_appends_cuda_after_clearing_the_folders_providers(gpu_builds, onnx_folder):
    from edgedistill.generation.onnx import load_onnx
    assert device.onnx_provider() == "cuda"
    model, genai_config, provider = load_onnx(onnx_folder, threads=2)
    assert (model, provider) == ("model", "cuda") and genai_config["model"]["type"] == "llama"
    assert provider_calls() == [("clear_providers",), ("append_provider", "cuda")]


def test_onnx_stays_on_the_cpu_without_cuda_or_when_told(gpu_builds, onnx_folder, monkeypatch):
    from edgedistill.generation.onnx import load_onnx
    og = gpu_builds[1]
    for cuda, setting in ((False, "auto"), (True, "cpu")):
        monkeypatch.setattr(og, "is_cuda_available", lambda cuda=cuda: cuda)
        monkeypatch.setenv(device.DEVICE_ENV, setting)
        assert load_onnx(onnx_folder, threads=2)[2] == "cpu"
        assert provider_calls() == [("clear_providers",)]


def test_the_onnx_generator_records_its_provider(gpu_builds, onnx_folder, smollm_tokenizer):
    from edgedistill.generation.onnx import OnnxGenerator
    smollm_tokenizer.save_pretrained(onnx_folder)
    assert OnnxGenerator(str(onnx_folder), threads=2).provider == "cuda"
