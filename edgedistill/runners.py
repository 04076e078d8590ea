"""The runner files beside each GGUF, and the truth at their top about the calculator.

    student-Q4_K_M.Modelfile    Ollama: no calculator there, said at the top with the measured pass@1 without it
    student-Q4_K_M.server.sh    `edgedistill serve` when installed (the page and /v1, the calculator filled while
                                decoding), else llama.cpp's server, which has no calculator (said at the top)

The export stage writes them, with the note between NOTE_START and NOTE_END; the eval stage, which measures pass@1
with and without the calculator, writes the same note with its figures into its own folder (eval/runners.md), not
into the export's files.
"""
from __future__ import annotations

from pathlib import Path


NOTE_START = "# --- edgedistill: the calculator ---"
NOTE_END = "# --- end of the calculator note ---"
APP_API = "http://127.0.0.1:8080/v1"


def modelfile_path(gguf: Path) -> Path:
    return Path(gguf).with_suffix(".Modelfile")


def server_script_path(gguf: Path) -> Path:
    return Path(gguf).with_suffix(".server.sh")


def calculator_note(runner: str, with_calculator: float | None = None, without: float | None = None,
                    data: str | None = None) -> str:
    """The block at the top of a runner file: the runner has no calculator, what that costs, and where to get it."""
    lines = [NOTE_START,
             f"# {runner} runs this model WITHOUT its calculator: the model writes `<<48*7.5=` and then makes up",
             "# the value itself, where edgedistill's runtime writes the computed one while decoding."]
    if with_calculator is not None and without is not None:
        lines.append(f"# Measured on {data}: pass@1 {with_calculator:.1%} with the calculator, {without:.1%} "
                     f"without it.")
    else:
        lines.append("# Measured by a run's eval stage: <run>/eval/runners.md; `edgedistill eval --model <this gguf>`")
        lines.append("# measures pass@1 with and without it.")
    lines += ["# With the calculator: `edgedistill serve --model <this gguf> --port 8080` (or ./*.server.sh with",
              f"# edgedistill installed): the page, and an OpenAI-compatible API at {APP_API} for any client.",
              NOTE_END]
    return "\n".join(lines) + "\n"


def with_note(text: str, note: str) -> str:
    """`text` with its calculator note replaced (or put first, after a #! line, when it has none)."""
    if NOTE_START in text and NOTE_END in text:
        head, rest = text.split(NOTE_START, 1)
        return head + note + rest.split(NOTE_END, 1)[1].lstrip("\n")
    if text.startswith("#!"):
        shebang, _, body = text.partition("\n")
        return f"{shebang}\n{note}{body}"
    return note + text


RUNNERS = {modelfile_path: "Ollama", server_script_path: "llama.cpp's server (the fallback below)"}
