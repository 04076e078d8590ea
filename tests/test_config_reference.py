"""Config as the single source: docs/config.md is generated from the dataclasses (and cannot go stale), every field
has help, choices are the Literal types (in YAML too), the ONNX setting names live once, and the CLI's flags that
mirror a key take their default, range and help from it."""
from __future__ import annotations

import dataclasses
import importlib.util
import typing
from pathlib import Path

import pytest
import yaml

from edgedistill import UserError
from edgedistill.cli import build_parser, main
from edgedistill.config import (ONNX_SETTINGS, Config, DataConfig, EvalConfig, ExportConfig, OnnxBuild, ServeConfig,
                                choices_of, load_config)

ROOT = Path(__file__).resolve().parents[1]


def reference():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves():
    """(dotted key, field, type) of every field of every section."""
    for dotted, cls in reference().sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield f"{dotted}.{f.name}" if dotted else f.name, f, hints[f.name]


def test_docs_config_md_is_what_the_dataclasses_generate():
    ref = reference()
    assert ref.TARGET.read_text(encoding="utf-8") == ref.render(), \
        "docs/config.md is stale: run `python tools/config_reference.py`"


def test_the_reference_names_every_section_and_key():
    text = reference().render()
    for dotted, cls in reference().sections():
        assert (f"## `{dotted}`" if dotted else "## Top level") in text
    for dotted, f, _ in leaves():
        assert f"| `{f.name}` |" in text, dotted
    assert "one of `auto`, `int4`" in text and "1 or more and at most 65535" in text


def test_every_field_has_help():
    missing = [dotted for dotted, f, _ in leaves() if not f.metadata.get("help", "").strip()]
    assert not missing, f"fields without help (option(..., help=...)): {missing}"


def test_choices_are_the_literal_types():
    for dotted, f, kind in leaves():
        rules = f.metadata.get("rules", {})
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        assert rules.get("choices") == choices_of(kind), dotted
        assert rules.get("each") == (choices_of(item) if item else None), dotted
    assert ExportConfig.__dataclass_fields__["onnx"].metadata["rules"]["choices"] == ONNX_SETTINGS


def test_yaml_literal_value_names_key_line_and_choices(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "teacher": {"backend": "onnx"}}))
    with pytest.raises(UserError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:3" in message and "'teacher.backend' must be one of" in message and "'llama.cpp'" in message
    path.write_text(yaml.safe_dump({"export": {"onnx": 4}}))
    with pytest.raises(UserError, match="'export.onnx' must be one of .*'int4-fp-head'.*got 4"):
        load_config(path)
    path.write_text(yaml.safe_dump({"export": {"onnx": "int8"}, "serve": {"answer_type": "label"}}))
    config = load_config(path)
    assert config.export.onnx == "int8" and config.serve.answer_type == "label"


def test_onnx_setting_names_live_once():
    from edgedistill.export.onnx import AUTO_ORDER, SETTINGS
    assert list(SETTINGS) == list(typing.get_args(OnnxBuild))
    assert set(ONNX_SETTINGS) == set(SETTINGS) | {"auto", "none"} and set(AUTO_ORDER) <= set(SETTINGS)


def flags(command: str) -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {option: action for action in sub._actions for option in action.option_strings}


@pytest.mark.parametrize("command,name,section,key", [
    ("eval", "--k", EvalConfig, "samples"),
    ("eval", "--temperature", EvalConfig, "temperature"),
    ("eval", "--batch-size", EvalConfig, "batch_size"),
    ("eval", "--max-new-tokens", EvalConfig, "max_new_tokens"),
    ("eval", "--threads", EvalConfig, "threads"),
    ("export", "--quant", ExportConfig, "quant"),
    ("export", "--more-quants", ExportConfig, "more_quants"),
    ("export", "--onnx", ExportConfig, "onnx"),
    ("export", "--min-agreement", ExportConfig, "min_agreement"),
    ("export", "--calibration-rows", ExportConfig, "calibration"),
    ("export", "--eval-data", DataConfig, "dev"),
])
def test_mirrored_flags_default_to_the_field(command, name, section, key):
    action = flags(command)[name]
    assert action.default == getattr(section(), key)
    assert f"{section.SECTION}.{key}" in action.help


@pytest.mark.parametrize("name", ["--host", "--port", "--samples", "--feedback", "--max-question-chars",
                                  "--concurrency", "--threads"])
def test_serve_flags_override_only_when_given_and_say_the_fields_help(name):
    action = flags("serve")[name]
    field = ServeConfig.__dataclass_fields__[action.dest]
    assert action.default is None   # a --config's serve: section stays in force
    assert f"default {field.default}, or --config's serve.{action.dest}" in action.help
    if name != "--host":   # --host words the auth rule for the command line
        assert field.metadata["help"].replace("%", "%%") in action.help


@pytest.mark.parametrize("argv,says", [
    (["serve", "--model", "m.gguf", "--port", "0"], "--port: must be 1 or more and at most 65535, got 0"),
    (["serve", "--model", "m.gguf", "--port", "70000"], "--port: must be 1 or more and at most 65535"),
    (["serve", "--model", "m.gguf", "--concurrency", "0"], "--concurrency: must be 1 or more"),
    (["serve", "--model", "m.gguf", "--threads", "-1"], "--threads: must be 0 or more"),
    (["serve", "--model", "m.gguf", "--host", " "], "--host: must be a non-empty text"),
    (["eval", "--model", "m", "--data", "d", "--k", "-1"], "--k: must be 0 or more"),
    (["eval", "--model", "m", "--data", "d", "--threads", "0"], "--threads: must be 1 or more and at most 4096"),
    (["export", "--model", "m", "--out", "o", "--onnx", "int3"], "--onnx: must be one of ("),
    (["export", "--model", "m", "--out", "o", "--min-agreement", "1.5"], "--min-agreement: must be 0.0 or more and"),
    (["export", "--model", "m", "--out", "o", "--calibration-rows", "0"], "--calibration-rows: must be 1 or more"),
])
def test_mirrored_flags_are_checked_by_the_fields_rules(tmp_path, capsys, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_export_command_builds_an_export_config_and_runs_the_stages_function(tmp_path, monkeypatch, capsys):
    import edgedistill.export.run as export_run
    calls = []
    monkeypatch.setattr(export_run, "run_export", lambda cfg, merged, out, calibration, questions, base:
                        calls.append((cfg, merged, out, calibration, list(questions), base)) or {"gguf": None})
    rows = tmp_path / "train.jsonl"
    rows.write_text('{"prompt": [{"role": "user", "content": "q"}], '
                    '"completion": [{"role": "assistant", "content": "a"}]}\n' * 3)
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--no-parity",
                 "--more-quants", "Q5_K_M, Q8_0", "--onnx", "int8", "--calibration", str(rows),
                 "--calibration-rows", "2"]) == 0
    cfg, merged, out, calibration, questions, base = calls[0]
    assert cfg == ExportConfig(more_quants=["Q5_K_M", "Q8_0"], onnx="int8", parity=False, calibration=2)
    assert (merged, out, questions, base) == (tmp_path / "m", tmp_path / "o", [], None)
    assert calibration is not None and len(calibration) == 2
    calls.clear()
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--more-quants", ""]) == 0
    cfg, _, _, calibration, questions, _ = calls[0]
    assert cfg == ExportConfig(more_quants=[], calibration=0) and calibration is None and questions


def test_config_defaults_are_unchanged():
    """The keys, defaults and choices users' configs rely on (a refactor of config.py must not move them)."""
    config = Config()
    assert (config.teacher.kind, config.teacher.backend, config.teacher.step_scorer) == ("dataset", "auto", "grounding")
    assert (config.student.method, config.student.format, config.student.precision) == \
        ("lora", "answer_first", "auto")
    assert config.student.stages == ["sft"] and config.student.report_to == ["tensorboard"]
    assert (config.export.onnx, config.export.quant, config.export.more_quants) == ("auto", "Q4_K_M", ["Q8_0"])
    assert (config.serve.port, config.serve.host, config.serve.answer_type) == (7860, "127.0.0.1", "number")
    assert config.student.online.objective == "grao"
