"""Export: HF folder -> GGUF f16 -> Q4_K_M with llama.cpp's own converter and quantizer; the GGUF reloads and answers."""
import json

import pytest

from edgedistill import UserError
from edgedistill.generate import Sampling
from edgedistill.llamacpp import LlamaCppGenerator
from export.gguf import export_gguf, quantize


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("export")
    return export_gguf(tiny_model_dir, out, "Q4_K_M"), out


def test_export_writes_f16_and_quantized_with_template_and_eos(exported, smollm_tokenizer):
    result, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["student-Q4_K_M.gguf", "student-f16.gguf"]   # no .partial left
    files = result["files"]
    assert files["Q4_K_M"]["bytes"] < files["f16"]["bytes"]
    generator = LlamaCppGenerator(result["gguf"])
    metadata = generator.llm.metadata
    assert metadata["tokenizer.chat_template"] == smollm_tokenizer.chat_template   # same prompt as training
    assert int(metadata["tokenizer.ggml.eos_token_id"]) == smollm_tokenizer.eos_token_id   # stops where it should


def test_gguf_prompt_and_tokens_match_transformers(exported, smollm_tokenizer):
    result, _ = exported
    generator = LlamaCppGenerator(result["gguf"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 60*7.5?"}]
    prompt = generator.render(messages)
    assert prompt == smollm_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert generator.encode(prompt, special=True) == smollm_tokenizer.encode(prompt, add_special_tokens=False)


def test_gguf_reloads_and_generates_with_calculator(exported):
    result, _ = exported
    generator = LlamaCppGenerator(result["gguf"])
    out = generator.generate([[{"role": "user", "content": "What is 6 times 7?"}]] * 2, Sampling(max_new_tokens=8))
    assert len(out) == 2 and out[0] == out[1]           # greedy is deterministic
    forced = generator.complete(generator.render([{"role": "user", "content": "x"}]), Sampling(max_new_tokens=1))
    assert isinstance(forced, str)


def test_truncated_gguf_is_a_clear_error(exported, tmp_path):
    result, _ = exported
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(open(result["gguf"], "rb").read()[:4096])
    with pytest.raises(UserError, match="cannot load this GGUF"):
        LlamaCppGenerator(str(broken))
    with pytest.raises(UserError, match="could not quantize"):
        quantize(broken, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.partial").exists()


def test_export_of_a_non_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "out")
