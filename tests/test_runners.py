"""The runner files' calculator note: written by export, replaced (never added twice), nothing else touched."""
from edgedistill.runners import NOTE_END, NOTE_START, RUNNERS, calculator_note, modelfile_path, with_note


def test_the_note_says_where_the_figures_are_and_is_replaced_not_added():
    modelfile = "FROM ./student-Q4_K_M.gguf\nPARAMETER temperature 0\n"
    first = with_note(modelfile, calculator_note(RUNNERS[modelfile_path]))
    assert first.startswith(NOTE_START) and "<run>/eval/runners.md" in first
    measured = with_note(first, calculator_note("Ollama", 0.384, 0.05, "shopfloor:heldout"))
    assert measured.count(NOTE_START) == 1 and measured.count(NOTE_END) == 1 and "eval/runners.md" not in measured
    assert "Measured on shopfloor:heldout: pass@1 38.4% with the calculator, 5.0% without it." in measured
    assert measured.endswith(f"{NOTE_END}\nFROM ./student-Q4_K_M.gguf\nPARAMETER temperature 0\n")
    script = with_note("#!/bin/sh\nexec llama-server -m student-Q4_K_M.gguf\n", calculator_note("llama.cpp's server"))
    assert script.startswith(f"#!/bin/sh\n{NOTE_START}\n# llama.cpp's server")
    assert script.endswith("exec llama-server -m student-Q4_K_M.gguf\n")
