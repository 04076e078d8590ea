"""Shared fixtures: a tiny random Llama with SmolLM2's real tokenizer, built in the test session (no hub)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's expectations are the CPU's (fp32 weights, CPU tensors fed to models it loads): on a GPU machine it
# runs there unless EDGEDISTILL_DEVICE=auto is set; the GPU paths' own check is benchmarks/gpu_check.py.
os.environ.setdefault("EDGEDISTILL_DEVICE", "cpu")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Each test session gets its own resolver cache, unless EDGEDISTILL_CACHE is set by the caller."""
    if "EDGEDISTILL_CACHE" not in os.environ:
        os.environ["EDGEDISTILL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """SmolLM2's real tokenizer and chat template, read from the packaged GGUF (no weights loaded)."""
    from transformers import AutoTokenizer
    from edgedistill.models import resolve
    gguf = resolve("smollm2-135m-instruct").path
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm_tokenizer):
    """A 2-layer, 64-wide random Llama with SmolLM2's tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=smollm_tokenizer.bos_token_id, eos_token_id=smollm_tokenizer.eos_token_id,
                         pad_token_id=smollm_tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder, safe_serialization=True)
    smollm_tokenizer.save_pretrained(folder)
    return folder
