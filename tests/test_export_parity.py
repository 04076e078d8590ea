"""The export stage end to end on a tiny random Llama: GGUF and ONNX, each checked against the source; the gate
fails an artifact that does not behave like its source; damaged inputs give clear errors; nothing is sent off the
machine (an audit hook in this process and in every child process records each socket.connect)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from edgedistill import UserError
from edgedistill.config import ExportConfig
from edgedistill.records import load_questions
from edgedistill.export.run import run_export


def questions(n=8):
    return load_questions("shopfloor:heldout", limit=n)


def small_config(**overrides):
    base = dict(quant="Q8_0", more_quants=[], onnx="fp32", calibration=0, parity_prompts=3, parity_eval=3,
                min_agreement=0.9)
    return ExportConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def connect_log(tmp_path_factory):
    """A sitecustomize that records every socket.connect address of any Python process started with it."""
    folder = tmp_path_factory.mktemp("audit")
    (folder / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, sys
        def _hook(event, args):
            if event == "socket.connect":
                with open(os.environ["EDGEDISTILL_CONNECT_LOG"], "a") as f:
                    f.write(repr(args[1]) + "\\n")
        sys.addaudithook(_hook)
    """))
    return folder, folder / "connects.log"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, connect_log):
    """One full export of the tiny model (GGUF f16 + Q8_0, ONNX fp32, parity of each), with every connection of
    this process and of its children (converter, builder, probes) recorded."""
    folder, log = connect_log
    out = tmp_path_factory.mktemp("export")
    attempts = []

    def hook(event, args):
        if event == "socket.connect":
            attempts.append(repr(args[1]))
    sys.addaudithook(hook)           # cannot be removed; it only appends to a list
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "EDGEDISTILL_CONNECT_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), saved["PYTHONPATH"]]))
    os.environ["EDGEDISTILL_CONNECT_LOG"] = str(log)
    try:
        result = run_export(small_config(), tiny_model_dir, out, None, questions())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    children = log.read_text().splitlines() if log.exists() else []
    return result, out, attempts + children


def is_loopback(address: str) -> bool:
    return address.startswith(("('127.", "('::1'", "'/")) or address.startswith("b'") or "localhost" in address


def test_export_sends_nothing_off_the_machine(exported, connect_log):
    _, _, attempts = exported
    assert [a for a in attempts if not is_loopback(a)] == []
    # the recorder works: a child process that does try to connect is seen
    folder, log = connect_log
    probe = "import socket\ntry:\n    socket.create_connection(('203.0.113.9', 9), timeout=0.01)\nexcept OSError:\n    pass"
    subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(folder),
                                                       "EDGEDISTILL_CONNECT_LOG": str(log)})
    assert "203.0.113.9" in log.read_text()


def test_every_artifact_has_a_parity_report_and_the_exact_ones_agree(exported):
    result, out, _ = exported
    assert set(result["parity"]) == {"GGUF Q8_0", "ONNX fp32"}
    onnx = json.loads((out / "onnx" / "parity.json").read_text())
    gguf = json.loads((out / "student-Q8_0.gguf.parity.json").read_text())
    for report in (onnx, gguf):
        assert report["template_ok"] is True
        assert report["agreement_tokens"] > 0 and report["kl_tokens"] > 0
        assert report["decode_tokens_per_s"] > 0 and report["peak_memory_mb"] > 0 and report["bytes"] > 0
        # scored on the parity_eval (3) questions, beside the source's score on the same 3; a random model answers
        # none of them, so anything but 0 is a scoring bug (a blank answer counted right, the error rate reported)
        assert report["eval_questions"] == 3 and report["pass@1"] == report["source_pass@1"] == 0.0
    assert onnx["agreement"] == 1.0 and onnx["kl"] < 1e-4            # fp32 ONNX is the same function
    assert gguf["agreement"] >= 0.9 and gguf["kl"] < 0.05
    assert "| GGUF Q8_0 |" in (out / "parity.md").read_text()


def test_modelfile_and_server_command_carry_template_and_stop_token(exported, smollm_tokenizer):
    _, out, _ = exported
    modelfile = (out / "student-Q8_0.Modelfile").read_text()
    assert "FROM ./student-Q8_0.gguf" in modelfile and "<|im_start|>assistant" in modelfile
    assert f'PARAMETER stop "{smollm_tokenizer.eos_token}"' in modelfile
    server = (out / "student-Q8_0.server.sh").read_text()
    assert "--jinja" in server and "--host 127.0.0.1" in server and os.access(out / "student-Q8_0.server.sh", os.X_OK)
    # the truth about the calculator at the top of each; the script prefers edgedistill's server, which has it
    assert modelfile.startswith("# --- edgedistill: the calculator ---\n# Ollama runs this model WITHOUT its calculator")
    assert server.startswith("#!/bin/sh\n# --- edgedistill: the calculator ---")
    assert server.index("exec edgedistill serve --model student-Q8_0.gguf") < server.index("exec llama-server")


def another_random_model(folder, tokenizer):
    """A random model that is not the tiny student: untied and wider than it (two tied random models both just
    repeat the last token, and agree)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(1)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         initializer_range=0.2, tie_word_embeddings=False,
                                         eos_token_id=tokenizer.eos_token_id))
    other.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_artifact_that_is_not_its_source_fails_the_gate(tmp_path, tiny_model_dir, smollm_tokenizer):
    """A stale GGUF of another random model sits in the export folder (the export reuses existing files): the
    parity check sees it does not behave like the source, and the export fails naming it, unless forced."""
    from edgedistill.export.gguf import export_gguf
    export_gguf(another_random_model(tmp_path / "other", smollm_tokenizer), tmp_path / "out", "Q8_0")
    config = small_config(onnx="none")
    with pytest.raises(UserError, match=r"GGUF Q8_0 \(agreement"):
        run_export(config, tiny_model_dir, tmp_path / "out", None, questions())
    report = json.loads((tmp_path / "out" / "student-Q8_0.gguf.parity.json").read_text())
    assert report["agreement"] < 0.5 and report["kl"] > 0.1
    config.force = True
    assert run_export(config, tiny_model_dir, tmp_path / "out", None, questions())["parity"]["GGUF Q8_0"]


def test_damaged_inputs_give_clear_errors(tmp_path, tiny_model_dir, exported):
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.generation.onnx import OnnxGenerator
    from edgedistill.export.gguf import convert_f16
    result, out, _ = exported
    gguf = tmp_path / "cut.gguf"
    data = open(result["gguf"], "rb").read()
    gguf.write_bytes(data[:len(data) // 3])
    with pytest.raises(UserError, match="truncated"):
        LlamaCppGenerator(str(gguf))
    broken_onnx = tmp_path / "onnx"
    broken_onnx.mkdir()
    for f in (out / "onnx").iterdir():
        content = f.read_bytes()
        (broken_onnx / f.name).write_bytes(content[:len(content) // 3] if f.suffix in (".onnx", ".data") else content)
    with pytest.raises(UserError, match="cannot load"):
        OnnxGenerator(str(broken_onnx))
    folder = tmp_path / "merged"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        content = f.read_bytes()
        (folder / f.name).write_bytes(content[:len(content) // 3] if f.suffix == ".safetensors" else content)
    with pytest.raises(UserError, match="converter failed"):
        convert_f16(folder, tmp_path / "x.gguf")
    with pytest.raises(UserError, match="no config.json"):
        run_export(small_config(), tmp_path, tmp_path / "y")


def test_a_lora_adapter_is_merged_in_full_precision_then_exported(tmp_path, tiny_model_dir):
    """An adapter folder (PEFT's save_pretrained) is merged into its base in fp32, and the export's parity is
    measured against that merged model: the adapter's update survives (the merged weights are base + B A)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from edgedistill.models import load_model
    model, tokenizer = load_model(str(tiny_model_dir))
    torch.manual_seed(3)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))     # a non-zero update
    peft_model.save_pretrained(tmp_path / "adapter")
    result = run_export(small_config(onnx="none", parity_eval=0), tmp_path / "adapter", tmp_path / "out", None,
                        questions(), base=str(tiny_model_dir))
    merged = load_file(tmp_path / "out" / "merged" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = peft_model.merge_and_unload().state_dict()[name]
    assert not torch.equal(merged[name], base[name])
    torch.testing.assert_close(merged[name], expected)
    assert merged[name].dtype == torch.float32
    assert result["parity"]["GGUF Q8_0"]["agreement"] >= 0.9


# --- which GGUF serves: the serving bar (export/serving.py) -------------------------------------------------------

def parity(agreement, kl, mib, template_ok=True):
    return {"agreement": agreement, "kl": kl, "bytes": mib << 20, "template_ok": template_ok}


def bar():
    from edgedistill.export.serving import ServingBar
    return ServingBar(min_agreement=0.98, max_kl=0.01)


def test_the_preferred_type_serves_when_it_holds_the_bar_even_if_a_smaller_one_does():
    from edgedistill.export.serving import choose_served
    reports = {"Q5_K_M": parity(0.985, 0.008, 120), "Q4_K_M": parity(0.99, 0.005, 100)}
    choice = choose_served(reports, "Q5_K_M", bar())
    assert (choice.quant, choice.holds_bar, choice.overruled) == ("Q5_K_M", True, False)


def test_a_preferred_type_below_the_bar_is_overruled_by_the_smallest_that_holds_it():
    from edgedistill.export.serving import choose_served
    reports = {"Q4_K_M": parity(0.924, 0.081, 100), "Q8_0": parity(0.99, 0.0013, 160),
               "Q6_K": parity(0.985, 0.004, 130), "Q5_K_M": parity(0.99, 0.011, 115)}   # Q5_K_M: KL just over
    choice = choose_served(reports, "Q4_K_M", bar())
    assert (choice.quant, choice.holds_bar, choice.overruled) == ("Q6_K", True, True)
    assert "instead of the preferred Q4_K_M" in choice.reason and "92.4%" in choice.reason


def test_with_no_file_under_the_bar_the_closest_serves_and_says_so():
    from edgedistill.export.serving import choose_served
    reports = {"Q4_K_M": parity(0.90, 0.09, 100), "Q8_0": parity(0.97, 0.02, 160),
               "Q6_K": parity(0.999, 0.001, 130, template_ok=False)}      # a different chat prompt never serves
    choice = choose_served(reports, "Q4_K_M", bar())
    assert (choice.quant, choice.holds_bar, choice.overruled) == ("Q8_0", False, True)
    assert "no file written holds the bar" in choice.reason


def test_without_parity_the_preferred_type_serves_unmeasured():
    from edgedistill.export.serving import choose_served
    choice = choose_served({}, "Q4_K_M", bar())
    assert (choice.quant, choice.holds_bar, choice.overruled) == ("Q4_K_M", False, False)
    assert "not measured" in choice.reason


def test_the_export_serves_the_file_that_holds_the_bar_not_the_preferred_one(tmp_path, tiny_model_dir,
                                                                             smollm_tokenizer):
    """A stale Q4_0 of another model stands where the preferred type goes: measured, it is far from the student,
    so the export serves its Q8_0, says why in parity.md, and hands that file on as the one to evaluate and serve."""
    from edgedistill.export.gguf import export_gguf
    export_gguf(another_random_model(tmp_path / "other", smollm_tokenizer), tmp_path / "out", "Q4_0")
    (tmp_path / "out" / "student-f16.gguf").unlink()          # the student's own f16 is converted afresh
    config = small_config(quant="Q4_0", more_quants=["Q8_0"], onnx="none", parity_eval=0, force=True,
                          serve_min_agreement=0.9, serve_max_kl=0.05)
    result = run_export(config, tiny_model_dir, tmp_path / "out", None, questions())
    assert result["parity"]["GGUF Q4_0"]["agreement"] < 0.9 <= result["parity"]["GGUF Q8_0"]["agreement"]
    assert result["quant"] == "Q8_0" and result["gguf"].endswith("student-Q8_0.gguf")
    assert result["served"]["overruled"] is True and result["preferred_quant"] == "Q4_0"
    assert "Q8_0 serves instead of the preferred Q4_0" in (tmp_path / "out" / "parity.md").read_text()


def test_the_source_continues_each_prompt_once_for_all_artifacts(tiny_model_dir):
    from edgedistill.export.parity import SourceModel
    source = SourceModel(tiny_model_dir)
    calls = []
    original = source._greedy
    source._greedy = lambda ids, n: calls.append(tuple(ids)) or original(ids, n)
    first = source.greedy([1, 2, 3], 4)
    assert source.greedy([1, 2, 3], 4) == first and calls == [(1, 2, 3)]     # the second artifact reuses it
    source.greedy([1, 2, 4], 4)
    assert len(calls) == 2
