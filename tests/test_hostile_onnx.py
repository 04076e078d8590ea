"""A hostile ONNX folder: genai_config.json is read as data and checked before onnxruntime-genai sees the folder.

onnxruntime-genai dlopens `session_options.custom_ops_library` while it builds the model (before model.onnx is even
read), so a downloaded folder with a planted library ran its constructor during `eval` or `serve`. These tests go
through `load_generator`, the entry point both use.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edgedistill import UserError
from edgedistill.generation import load_generator

# the shape onnxruntime-genai's model builder writes for a CPU export of a small Llama
BUILDER_CONFIG = {
    "model": {
        "bos_token_id": 1, "context_length": 1024, "eos_token_id": 2, "pad_token_id": 2, "type": "llama",
        "vocab_size": 49152,
        "decoder": {
            "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
            "filename": "model.onnx", "head_size": 16, "hidden_size": 64,
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                       "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"},
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        },
    },
    "search": {"do_sample": False, "max_length": 1024, "num_beams": 1, "top_k": 50, "top_p": 1.0},
}


def onnx_folder(tmp_path, config: dict | str) -> Path:
    folder = tmp_path / "onnx"
    folder.mkdir(exist_ok=True)
    (folder / "genai_config.json").write_text(json.dumps(config) if isinstance(config, dict) else config)
    return folder


def with_setting(section: str, key: str, value) -> dict:
    """BUILDER_CONFIG with `key` (a name that may hold dots) set to `value` in the dotted `section`."""
    config = copy.deepcopy(BUILDER_CONFIG)
    node = config
    for name in section.split("."):
        node = node.setdefault(name, {})
    node[key] = value
    return config


@pytest.fixture
def genai_untouchable(monkeypatch):
    """onnxruntime-genai replaced by a module that fails the test if the folder ever reaches it."""
    def touched(*args, **kwargs):
        raise AssertionError("onnxruntime-genai was handed a folder that should have been refused")
    fake = types.ModuleType("onnxruntime_genai")
    fake.Config = fake.Model = touched
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", fake)


def refused(path, where: str) -> str:
    """The start of the refusal: the file, then the key."""
    return re.escape(f"{path}: {where} ")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler to build the planted library")
def test_planted_custom_ops_library_never_runs(tmp_path):
    """The real runtime: a library inside the folder, named by a relative path as onnxruntime-genai allows."""
    pytest.importorskip("onnxruntime_genai")
    marker = tmp_path / "constructor-ran"
    source = tmp_path / "planted.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {\n'
                      f'    FILE *f = fopen("{marker}", "w");\n    if (f) {{ fputs("ran", f); fclose(f); }}\n}}\n')
    folder = onnx_folder(tmp_path, with_setting("model.decoder.session_options", "custom_ops_library",
                                                  "libplanted.so"))
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(folder / "libplanted.so"), str(source)], check=True)
    with pytest.raises(UserError) as refusal:
        load_generator(str(folder))
    assert not marker.exists(), "the planted library's constructor ran"
    assert re.match(refused(folder / "genai_config.json", "model.decoder.session_options.custom_ops_library"),
                    str(refusal.value))


PROVIDERS = "model.decoder.session_options.provider_options"


@pytest.mark.parametrize("section, key, value, named", [
    # every session-bearing section has its own session_options
    ("model.decoder.session_options", "custom_ops_library", "/opt/x/libops.so", None),
    ("model.encoder.session_options", "custom_ops_library", "libops.so", None),
    ("model.vision.session_options", "custom_ops_library", "libops.so", None),
    ("model.speech.session_options", "custom_ops_library", "libops.so", None),
    ("model.embedding.session_options", "custom_ops_library", "libops.so", None),
    ("model.mtp.session_options", "custom_ops_library", "libops.so", None),
    # an extensionless library path is refused by the allow-list, not by its look
    ("model.decoder.session_options", "custom_ops_library", "./planted", None),
    # any session config entry outside the allow-list; profiling writes a file wherever it says
    ("model.decoder.session_options", "ep.context_file_path", "ctx.onnx", None),
    ("model.decoder.session_options", "enable_profiling", "/etc/profile", None),
    # execution-provider options that load code (we run on the CPU, so none is needed)
    ("model.decoder.session_options", "provider_options", [{"QNN": {"backend_path": "libQnnHtp.so"}}],
     f"{PROVIDERS}[0].QNN"),
    ("model.decoder.session_options", "provider_options", [{"cpu": {}}, {"TensorRT": {"trt_extra_plugin_lib_paths":
                                                                                      "/x/p.so"}}],
     f"{PROVIDERS}[1].TensorRT"),
    ("model.decoder.session_options", "provider_options", [{"OpenVINO": {"device_type": "CPU", "config_file": "c"}}],
     f"{PROVIDERS}[0].OpenVINO"),
    # the second net: keys and values that name code elsewhere, in sections a later runtime may add
    ("model.decoder", "pipeline", [{"stage": {"filename": "a.onnx", "session_options": {"custom_ops_library": "x"}}}],
     "model.decoder.pipeline[0].stage.session_options.custom_ops_library"),
    ("engine", "plugin_library", "/tmp/anything", None),
    ("model.decoder", "filename", "model.dll", None),
])
def test_code_loading_keys_are_refused_before_onnxruntime_genai(tmp_path, genai_untouchable, section, key, value,
                                                               named):
    folder = onnx_folder(tmp_path, with_setting(section, key, value))
    with pytest.raises(UserError, match=refused(folder / "genai_config.json", named or f"{section}.{key}")):
        load_generator(str(folder))


def test_duplicate_keys_are_refused(tmp_path, genai_untouchable):
    """json keeps the last copy, onnxruntime-genai's own parser applies both: the hidden first one must not pass."""
    text = json.dumps(BUILDER_CONFIG).replace(
        '"session_options": {', '"session_options": {"custom_ops_library": "libx.so"}, "session_options": {', 1)
    folder = onnx_folder(tmp_path, text)
    with pytest.raises(UserError, match=re.escape(f"{folder / 'genai_config.json'}: the key 'session_options' "
                                                  f"appears twice")):
        load_generator(str(folder))


@pytest.mark.parametrize("content, says", [
    (b"{\"model\": {", "not valid JSON"),
    (b"\xff\xfe{\x00}\x00", "not UTF-8"),
    (b"[1, 2]", "not a genai_config.json"),
    (b"{\"model\": 3}", "not a genai_config.json"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),       # deeper than Python's recursion limit
])
def test_malformed_config_is_a_user_error(tmp_path, genai_untouchable, content, says):
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "genai_config.json").write_bytes(content)
    with pytest.raises(UserError, match=re.escape(f"{folder / 'genai_config.json'}: {says}")):
        load_generator(str(folder))


def test_the_builders_own_config_passes(tmp_path):
    """What the export stage writes (CPU, and with the flags the builder may add) is data and reads back whole."""
    from edgedistill.generation.onnx import read_genai_config
    config = with_setting("model", "decoder", {**BUILDER_CONFIG["model"]["decoder"], "session_options": {
        "log_id": "onnxruntime-genai", "provider_options": [{"cuda": {}}], "intra_op_num_threads": 2,
        "graph_optimization_level": "ORT_ENABLE_ALL", "session.use_device_allocator_for_initializers": "1"}})
    assert read_genai_config(onnx_folder(tmp_path, config)) == config
