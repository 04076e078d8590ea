"""Export: HF folder -> GGUF f16 -> Q4_K_M with llama.cpp's own converter and quantizer; the GGUF reloads and answers."""
import sys

import pytest

from edgedistill import UserError
from edgedistill.generation import Sampling
from edgedistill.generation.llamacpp import LlamaCppGenerator
from edgedistill.export.gguf import export_gguf, quantize


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("export")
    return export_gguf(tiny_model_dir, out, "Q4_K_M"), out


def test_export_writes_f16_and_quantized_with_template_and_eos(exported, smollm_tokenizer):
    result, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["student-Q4_K_M.Modelfile", "student-Q4_K_M.gguf",
                                                     "student-Q4_K_M.server.sh", "student-f16.gguf"]   # no .partial
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


def test_gguf_reloads_and_generates_with_calculator(exported, monkeypatch):
    result, _ = exported
    generator = LlamaCppGenerator(result["gguf"])
    out = generator.generate([[{"role": "user", "content": "What is 6 times 7?"}]] * 2, Sampling(max_new_tokens=8))
    assert len(out) == 2 and out[0] == out[1]           # greedy is deterministic
    # a random model never opens a computation, so the model's choices are scripted: it writes "Answer: <<6*7=",
    # then only end-of-sequence; the runtime must fill in "42>>" and run those tokens through the model too
    script = generator.encode("Answer: <<6*7=")
    choices = iter(script)
    monkeypatch.setattr(sys.modules[LlamaCppGenerator.__module__], "choose_tokens",   # the backend's own loop
                        lambda logits, sampling, rng: [next(choices, min(generator.eos))] * len(logits))
    fed = []
    decode = generator._decode
    monkeypatch.setattr(generator, "_decode", lambda ctx, entries: (fed.extend(e[0] for e in entries),
                                                                      decode(ctx, entries))[1])
    prompt = generator.render([{"role": "user", "content": "What is 6 times 7?"}])
    assert generator.complete(prompt, Sampling(max_new_tokens=16)) == "Answer: <<6*7=42>>"
    filled = script + generator.encode("42>>")
    assert fed[-len(filled):] == filled                 # the forced value is in the KV cache, not only the text
    choices = iter(script)
    assert generator.complete(prompt, Sampling(max_new_tokens=16, calculator=False)) == "Answer: <<6*7="


def test_gguf_batched_decoding_matches_one_at_a_time():
    """Continuous batching (slots refilled as rows finish, the shared prefix copied into each slot) returns every
    conversation's own completion, in order: the same text as decoding it alone. On the packaged SmolLM2 GGUF,
    because a random tiny model only ever writes newlines."""
    from edgedistill.models import resolve
    generator = LlamaCppGenerator(str(resolve("smollm2-135m-instruct").path))
    system = {"role": "system", "content": "You answer questions from the factory floor in one short sentence."}
    conversations = [[system, {"role": "user", "content": q}] for q in
                     ["What is 6 times 7?", "Name a colour.", "What does a lathe do?", "Say hello.", "What is CNC?"]]
    sampling = Sampling(max_new_tokens=10, stop_after_answer=False)
    batched = generator.generate(conversations, sampling, batch_size=2)
    alone = [generator.generate([c], sampling, batch_size=1)[0] for c in conversations]
    assert len(set(alone)) == len(alone)          # the prompts really lead to different completions
    # every row gets its own conversation's completion, in order. Not always bit-identical: llama.cpp's CPU kernels
    # are not batch-invariant on every instruction set (on AVX512-BF16 one of five rows flips at a near tie), so a
    # row must share a longer prefix with its own solo decode than with any other, and most must be identical.
    def common(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    for i, text in enumerate(batched):
        assert common(text, alone[i]) > max(common(text, other) for j, other in enumerate(alone) if j != i)
    assert sum(b == a for b, a in zip(batched, alone)) >= 3


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


# --- importance matrix (imatrix) -------------------------------------------------------------------------------

def test_importance_is_the_mean_squared_input_per_column():
    import torch
    from types import SimpleNamespace
    from edgedistill.export.imatrix import collect_importance

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 3)
            self.proj = torch.nn.Linear(3, 4)

        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(last_hidden_state=self.proj(self.embed(input_ids)))

    class ToyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder, self.head = Decoder(), torch.nn.Linear(4, 10)

        def get_decoder(self):
            return self.decoder

        def get_output_embeddings(self):
            return self.head

    torch.manual_seed(0)
    toy = ToyLM()
    importance = collect_importance(toy, [[1, 2, 3], [4, 5]], batch_size=2)   # one padded batch
    x = toy.decoder.embed.weight[[1, 2, 3, 4, 5]].detach()                     # the 5 real tokens, no padding
    hidden = toy.decoder.proj(x).detach()
    assert sorted(importance) == ["decoder.proj", "head"]
    assert importance["decoder.proj"] == pytest.approx((x ** 2).mean(0).numpy(), rel=1e-5)
    assert importance["head"] == pytest.approx((hidden ** 2).mean(0).numpy(), rel=1e-5)


def test_importance_names_are_the_tensor_names_in_the_gguf(exported, tiny_model_dir):
    import gguf
    import numpy as np
    from transformers import AutoConfig
    from edgedistill.export.imatrix import gguf_names
    config = AutoConfig.from_pretrained(tiny_model_dir)
    hf = {"model.layers.1.mlp.down_proj": np.ones(128), "model.layers.0.self_attn.q_proj": np.ones(64),
          "lm_head": np.ones(64), "not.a.weight": np.ones(3)}
    names = gguf_names(hf, config)
    assert sorted(names) == ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"]   # tied head
    in_file = {t.name for t in gguf.GGUFReader(str(exported[1] / "student-f16.gguf")).tensors}
    assert set(names) <= in_file                         # what the converter really wrote


def test_importance_steers_the_rounding(exported, tmp_path):
    """Weighting one input column of a matrix a million times more must shrink that column's rounding error."""
    import gguf
    import numpy as np
    from edgedistill.export.gguf import quantize
    f16 = exported[1] / "student-f16.gguf"
    name = "blk.0.ffn_down.weight"

    def column_error(path):
        tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
        source = gguf.quants.dequantize(source_tensors[name].data, source_tensors[name].tensor_type)
        result = gguf.quants.dequantize(tensors[name].data, tensors[name].tensor_type)
        return np.abs(result - source).reshape(source.shape)[:, 5].mean()

    source_tensors = {t.name: t for t in gguf.GGUFReader(str(f16)).tensors}
    plain = quantize(f16, tmp_path / "plain.gguf", "Q4_0")
    weights = np.ones(128, dtype=np.float32)
    weights[5] = 1e6
    steered = quantize(f16, tmp_path / "steered.gguf", "Q4_0", importance={name: weights})
    assert column_error(steered) < 0.5 * column_error(plain)
