"""Export round trip for each architecture a student can have: llama (SmolLM2), qwen2 and qwen3 (Qwen2.5-Coder's
tokenizer) and gemma3 (Gemma 3 270M's).

Each is a tiny random model of that architecture built here, with its family's real tokenizer read from a packaged
GGUF (edgedistill.models.PACKAGED): llama.cpp's converter identifies a BPE tokenizer by hashing what it makes of a
test string and rejects one it does not know, so a made-up tokenizer would test nothing real. Each model goes through
export/gguf.py (llama.cpp's converter: f16, then Q8_0) and export/onnx.py (onnxruntime-genai's builder: fp32), and our
own runtimes (LlamaCppGenerator, OnnxGenerator) must render the same chat prompt, produce the same token ids (also the
same as the packaged model's own GGUF), keep the EOS, and compute the next-token distributions transformers computes
in fp32 over a teacher-forced conversation longer than Gemma's sliding window. Random tiny models are near flat, so
greedy decoding is checked step by step: each token a runtime picks must be transformers' top token up to the
artifact's precision, rather than the whole sequence compared at once (a near tie may legitimately flip).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgedistill.generation import Sampling

HIDDEN = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, max_position_embeddings=1024,
              tie_word_embeddings=True, initializer_range=0.2)   # a wider init: fewer near ties between top tokens

# Gemma 3's chat template, as its instruction-tuned checkpoints ship it (tokenizer_config.json of google/gemma-3-*-it):
# the packaged Gemma 3 270M GGUF, a base model, carries none, and a Gemma 3 student is trained and served with this one.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n")


@dataclass(frozen=True)
class Family:
    packaged: str                  # the PACKAGED model whose tokenizer the tiny model gets
    model_class: str               # transformers class names
    config_class: str
    config: dict                   # on top of HIDDEN
    broken: dict                   # a config change a faulty converter or runtime could make: parity must catch it
    chat_template: str | None = None    # for a packaged GGUF that carries none
    layers: int = 2


def _rope(theta: float) -> dict:
    return {"rope_type": "default", "rope_theta": theta}


FAMILIES = {
    # RoPE bases as in SmolLM2-135M (1e5) and Qwen2.5 / Qwen3 (1e6)
    "llama": Family("smollm2-135m-instruct", "LlamaForCausalLM", "LlamaConfig",
                    dict(num_key_value_heads=2, rope_parameters=_rope(1e5)), broken=dict(rope_theta=1e4)),
    "qwen2": Family("qwen2.5-coder-1.5b-instruct", "Qwen2ForCausalLM", "Qwen2Config",
                    dict(num_key_value_heads=2, rope_parameters=_rope(1e6)), broken=dict(rope_theta=1e4)),
    "qwen3": Family("qwen2.5-coder-1.5b-instruct", "Qwen3ForCausalLM", "Qwen3Config",
                    dict(num_key_value_heads=2, head_dim=16, rope_parameters=_rope(1e6)), broken=dict(rope_theta=1e4)),
    # Gemma 3 270M's shape, scaled down: one KV head, 5 sliding-window layers then 1 global one (llama.cpp assumes
    # exactly this 5:1 pattern for gemma3: the converter writes no per-layer pattern), two RoPE bases, and the
    # query scale 1/sqrt(head_dim) that llama.cpp uses (query_pre_attn_scalar = head_dim, as in the 270M).
    "gemma3": Family("gemma3-270m", "Gemma3ForCausalLM", "Gemma3TextConfig",
                     dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                          layer_types=["sliding_attention"] * 5 + ["full_attention"]),
                     broken=dict(layer_types=["full_attention"] * 6),     # a runtime ignoring the sliding window
                     chat_template=GEMMA3_CHAT_TEMPLATE, layers=6),
    # A Gemma 3 student cut to 2 layers (sliding, full): not llama.cpp's assumed 5:1 pattern, so only the converter
    # fix in export/gguf.py (the per-layer pattern written from layer_types) makes its GGUF attend correctly.
    "gemma3-2-layers": Family("gemma3-270m", "Gemma3ForCausalLM", "Gemma3TextConfig",
                              dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                   layer_types=["sliding_attention", "full_attention"]),
                              broken=dict(layer_types=["full_attention"] * 2),
                              chat_template=GEMMA3_CHAT_TEMPLATE, layers=2),
}
GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3", "gemma3-2-layers": "gemma3"}   # general.architecture
ONNX_TYPE = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text",
             "gemma3-2-layers": "gemma3_text"}   # genai_config's type

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "A lathe turns 60 parts an hour. How many in 7.5 hours? Show the steps."}]
ANSWER = "60 parts an hour for 7.5 hours is <<60*7.5=450>>450 parts.\nAnswer: 450"
# Text the pre-tokenizers split differently (whitespace runs, digits, scripts, emoji, code, quotes): a GGUF written with
# the wrong one tokenizes some of it differently (SmolLM2 as llama-bpe, or Gemma 3 as default, fails here).
TEXTS = ["Hello world", "  two  spaces\n\n\nnewlines\ttab 12345 3.3 3..3", "ünïcödé 漢字 🙂 😶\u200d🌫️ нещо на Български",
         "def f(x):\n    return x**2  # square\n",
         "I've been 'told he's there, 'RE you sure? '''```\"\"\"......!!!!?????",
         "?我想在apple工作1314151天～ ------======= 🦙🦙 3 33 333 3333 33333 333333"]
# Parity against transformers fp32, over the whole vocabulary at every position: (least top-1 agreement, largest
# |log p difference|, largest mean KL(transformers || artifact)). Measured here: f16 1.0 / <= 0.05 / < 1e-5;
# Q8_0 (weights and, in llama.cpp's matmuls, activations rounded to 8 bits) 0.86-0.92 / <= 0.91 / <= 0.003 on these
# near-flat random distributions; ONNX fp32 1.0 / < 2e-5 / ~1e-12. A wrong RoPE base or an ignored sliding window:
# 0.08-0.24 / 9-12 / 0.5-1.3.
BOUNDS = {"f16": (0.90, 0.15, 1e-3), "Q8_0": (0.75, 1.5, 0.01), "onnx-fp32": (0.95, 1e-3, 1e-5)}
NEW_TOKENS = 12


def _log_probs(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _parity(reference: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, max |log p difference|, mean KL(reference || other)) of two [positions, vocab] arrays of
    log-probabilities."""
    kl = (np.exp(reference) * (reference - other)).sum(-1).mean()
    return float((reference.argmax(-1) == other.argmax(-1)).mean()), float(np.abs(reference - other).max()), float(kl)


def _assert_within(measured: tuple[float, float, float], bounds: tuple[float, float, float], what) -> None:
    top1, worst, kl = measured
    assert top1 >= bounds[0] and worst <= bounds[1] and kl <= bounds[2], (what, measured)


def _reference(folder: Path, ids: list[int], **config_changes) -> np.ndarray:
    """transformers' fp32 log-probabilities at every position of `ids`, from the saved folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(folder)
    for key, value in config_changes.items():
        if key == "rope_theta":    # transformers 5 keeps RoPE's base in rope_parameters
            config.rope_parameters = {**config.rope_parameters, "rope_theta": value}
        else:
            setattr(config, key, value)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        return _log_probs(model(torch.tensor([ids])).logits[0].numpy())


def _check_greedy(folder: Path, prompt_ids: list[int], chosen: list[int], tolerance: float) -> None:
    """Every token a runtime chose greedily is transformers' top token at that step, up to `tolerance` in log p."""
    assert chosen, "the runtime generated nothing"
    reference = _reference(folder, prompt_ids + chosen)[len(prompt_ids) - 1:-1]
    picked = reference[np.arange(len(chosen)), chosen]
    assert (picked >= reference.max(-1) - tolerance).all(), (chosen, reference.argmax(-1).tolist())


@pytest.fixture(scope="session")
def family_tokenizers(tmp_path_factory, request):
    """Packaged model name -> a folder with its tokenizer files, read from its GGUF once per session."""
    folders: dict[str, Path] = {}

    def folder(packaged: str) -> Path:
        if packaged not in folders:
            if packaged == "smollm2-135m-instruct":    # conftest's, shared with the other tests
                tokenizer = request.getfixturevalue("smollm_tokenizer")
            else:
                from transformers import AutoTokenizer
                from edgedistill.models import resolve
                gguf = resolve(packaged).path
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            folders[packaged] = tmp_path_factory.mktemp(f"tokenizer-{packaged}")
            tokenizer.save_pretrained(folders[packaged])
        return folders[packaged]
    return folder


@pytest.fixture(scope="module", params=list(FAMILIES))
def arch(request, family_tokenizers, tmp_path_factory):
    """One family's tiny random model, saved, exported to GGUF (f16, Q8_0) and ONNX (fp32), with transformers'
    reference log-probabilities over a teacher-forced conversation."""
    import torch
    import transformers
    from transformers import AutoTokenizer
    from edgedistill.export.gguf import export_gguf
    from edgedistill.export.onnx import build_onnx
    name, family = request.param, FAMILIES[request.param]
    tokenizer = AutoTokenizer.from_pretrained(family_tokenizers(family.packaged))
    if family.chat_template:
        tokenizer.chat_template = family.chat_template
    config = getattr(transformers, family.config_class)(
        **HIDDEN, **family.config, num_hidden_layers=family.layers, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = getattr(transformers, family.model_class)(config)
    root = tmp_path_factory.mktemp(f"arch-{name}")
    folder = root / "merged"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    gguf = export_gguf(folder, root / "gguf", quant="Q8_0", keep_f16=True)
    onnx = build_onnx(folder, root / "onnx", setting="fp32")
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    ids = prompt_ids + tokenizer.encode(ANSWER, add_special_tokens=False)
    return SimpleNamespace(name=name, family=family, folder=folder, tokenizer=tokenizer, prompt=prompt,
                           prompt_ids=prompt_ids, ids=ids, reference=_reference(folder, ids),
                           gguf={q: Path(f["path"]) for q, f in gguf["files"].items()}, onnx=Path(onnx["path"]))


def _gguf_log_probs(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return _log_probs(np.array(llm.scores[:len(ids)]))
    finally:
        llm.close()


def test_tiny_model_has_the_family_shape(arch):
    config = json.loads((arch.folder / "config.json").read_text())
    assert config["architectures"] == [arch.family.model_class]
    assert config["vocab_size"] == len(arch.tokenizer) >= 49152      # the real vocabulary, not a toy one
    assert len(arch.ids) > 2 * (config.get("sliding_window") or 0)       # the conversation outgrows Gemma's window


def test_gguf_renders_tokenizes_and_stops_like_transformers(arch):
    import llama_cpp
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.models import resolve
    generator = LlamaCppGenerator(str(arch.gguf["f16"]))
    packaged = llama_cpp.Llama(model_path=str(resolve(arch.family.packaged).path), vocab_only=True, verbose=False)
    try:
        metadata = generator.llm.metadata
        assert metadata["general.architecture"] == GGUF_ARCH[arch.name]
        assert metadata["tokenizer.chat_template"] == arch.tokenizer.chat_template
        assert generator.render(MESSAGES) == arch.prompt                       # the prompt the student was trained on
        for text in [arch.prompt, ANSWER, *TEXTS]:
            expected = arch.tokenizer.encode(text, add_special_tokens=False)
            assert generator.encode(text, special=True) == expected, text
            assert packaged.tokenize(text.encode(), add_bos=False, special=True) == expected, text   # the real one
        assert int(metadata["tokenizer.ggml.eos_token_id"]) == arch.tokenizer.eos_token_id
        assert arch.tokenizer.eos_token_id in generator.eos
    finally:
        generator.llm.close()
        packaged.close()


@pytest.mark.parametrize("quant", ["f16", "Q8_0"])
def test_gguf_next_token_distributions_match_transformers(arch, quant):
    _assert_within(_parity(arch.reference, _gguf_log_probs(arch.gguf[quant], arch.ids)), BOUNDS[quant],
                   (arch.name, quant))


def test_gguf_greedy_decoding_follows_transformers(arch):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(arch.gguf["f16"]), n_ctx=512, logits_all=True, verbose=False)
    try:
        llm.eval(arch.prompt_ids)
        chosen = []
        for _ in range(NEW_TOKENS):
            chosen.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([chosen[-1]])
    finally:
        llm.close()
    _check_greedy(arch.folder, arch.prompt_ids, chosen, BOUNDS["f16"][1])


def test_onnx_renders_tokenizes_and_stops_like_transformers(arch):
    from edgedistill.generation.onnx import OnnxGenerator
    generator = OnnxGenerator(str(arch.onnx), threads=1)
    assert generator.render(MESSAGES) == arch.prompt
    for text in [arch.prompt, ANSWER, *TEXTS]:
        assert generator.encode(text) == arch.tokenizer.encode(text, add_special_tokens=False), text
    assert arch.tokenizer.eos_token_id in generator.eos
    genai = json.loads((arch.onnx / "genai_config.json").read_text())
    assert genai["model"]["type"] == ONNX_TYPE[arch.name] and genai["search"]["do_sample"] is False


def test_onnx_next_token_distributions_and_greedy_match_transformers(arch):
    """Teacher-forced one token at a time through onnxruntime-genai's KV cache, then our greedy decoding loop."""
    from edgedistill.generation.onnx import OnnxGenerator
    generator = OnnxGenerator(str(arch.onnx), threads=1)
    stepper = generator.generator_for(arch.ids[:1], max_new_tokens=len(arch.ids))
    logits = [np.array(stepper.get_logits())[0, -1]]
    for token in arch.ids[1:]:
        stepper.append_tokens(np.array([token], dtype=np.int32))
        logits.append(np.array(stepper.get_logits())[0, -1])
    _assert_within(_parity(arch.reference, _log_probs(np.stack(logits))), BOUNDS["onnx-fp32"], arch.name)
    chosen = generator.complete_ids(arch.prompt_ids, Sampling(max_new_tokens=NEW_TOKENS, stop_after_answer=False,
                                                              calculator=False))
    _check_greedy(arch.folder, arch.prompt_ids, chosen, BOUNDS["onnx-fp32"][1])


def test_parity_bounds_catch_a_wrong_model(arch):
    """The bounds have teeth: the GGUF compared with the same weights under a config a faulty converter or runtime
    could produce (a wrong RoPE base; for Gemma 3, the sliding window ignored) fails them."""
    wrong = _reference(arch.folder, arch.ids, **arch.family.broken)
    top1, worst, kl = _parity(wrong, _gguf_log_probs(arch.gguf["f16"], arch.ids))
    assert top1 < 0.8 and worst > 10 * BOUNDS["f16"][1], (arch.name, top1, worst, kl)   # far outside, not borderline
