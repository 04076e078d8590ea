"""Write docs/config.md, the reference of every config key, from the dataclasses in edgedistill/config.py.

    python tools/config_reference.py           (re)write docs/config.md
    python tools/config_reference.py --check   exit 1 when docs/config.md is not what would be written

Every section, key, type, default, allowed values and help comes from the fields (`option(...)` and the `Literal`
types), so the page cannot say something the config does not do; tests/test_config_reference.py fails when it is
stale.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import types
import typing
from pathlib import Path

from edgedistill.config import Config, choices_of, describe, section_list

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "config.md"

HEADER = """# Config reference

<!-- Generated from edgedistill/config.py by tools/config_reference.py: edit the fields' help there, then run
     `python tools/config_reference.py`. tests/test_config_reference.py fails when this page is stale. -->

`edgedistill run --config FILE.yaml` (and `teach`, `train`, `serve --config`) read one YAML file with the sections
below. Every key has a default, so a config lists only what differs from it, for example:

```yaml
teacher:
  kind: model
  model: qwen2.5-coder-1.5b-instruct
student:
  stages: [sft, dpo]
  dpo: {beta: 0.2}
```

An unknown key, a value of the wrong type, a value outside the allowed range or a data file that does not exist
stops the run before anything is written, with the file, the line and what is allowed. A count is never 0: leave an
optional count out (or write `null`) to mean "all". The command-line flags that mirror a key (`edgedistill serve
--port`, `edgedistill eval --k`, `edgedistill export --quant`, ...) take their default, range and help from the same
field.
"""


def sections(cls: type = Config, dotted: str = "") -> list[tuple[str, type]]:
    """(dotted name, class) of the config and every section inside it, in field order, depth first."""
    found = [(dotted, cls)]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += sections(hints[f.name], f"{dotted}.{f.name}" if dotted else f.name)
        listed = section_list(hints[f.name])
        if listed:   # data.train's items: a section of their own
            found += sections(listed, f"{dotted}.{f.name}[]")
    return found


def optional(kind) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def type_name(kind) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join("null" if t is type(None) else type_name(t) for t in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"list of {type_name(typing.get_args(kind)[0])}s"
    if typing.get_origin(kind) is dict:
        return f"mapping of {type_name(typing.get_args(kind)[0])}s to {type_name(typing.get_args(kind)[1])}s"
    if choices_of(kind):
        return "string"
    if dataclasses.is_dataclass(kind):
        return f"section ([`{kind.SECTION}`](#{anchor(kind.SECTION)}))" if kind.SECTION.endswith("[]") else "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[kind]


def default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if dataclasses.is_dataclass(value):
        return ""
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(value)}`"   # null, true, [..]: as YAML reads it back


def allowed_text(rules: dict, kind) -> str:
    parts = []
    if "choices" in rules:
        parts.append("one of " + ", ".join(f"`{c}`" for c in rules["choices"]))
    if "each" in rules:
        parts.append("each one of " + ", ".join(f"`{c}`" for c in rules["each"]))
    bounds = {k: v for k, v in rules.items() if k not in ("choices", "each")}
    if bounds:
        parts.append(describe(bounds))
    if parts and optional(kind):
        parts.append("or null")
    return "; ".join(parts)


def anchor(dotted: str) -> str:
    return dotted.replace(".", "").replace("[]", "")   # GitHub's heading anchors drop dots, brackets, backticks


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def doc_of(cls: type) -> str:
    """The class's own docstring (not the signature @dataclass writes when there is none)."""
    doc = cls.__dict__.get("__doc__") or ""
    return "" if doc.startswith(f"{cls.__name__}(") else " ".join(inspect.cleandoc(doc).split())


def render() -> str:
    out = [HEADER]
    for dotted, cls in sections():
        out.append(f"## `{dotted}`" if dotted else "## Top level")
        out.append("")
        if doc_of(cls):
            out += [doc_of(cls), ""]
        out.append("| key | type | default | allowed | description |")
        out.append("|---|---|---|---|---|")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, rules = hints[f.name], f.metadata.get("rules", {})
            key = f"{dotted}.{f.name}" if dotted else f.name
            help_text = f.metadata.get("help", "")
            if dataclasses.is_dataclass(kind):
                help_text = f"{help_text}: see [`{key}`](#{anchor(key)})"
            out.append(f"| `{f.name}` | {type_name(kind)} | {default_text(f)} | {cell(allowed_text(rules, kind))} "
                       f"| {cell(help_text)} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run python tools/config_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
