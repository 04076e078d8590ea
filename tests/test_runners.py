"""The runner files' calculator note: written by export, rewritten with the eval's figures, nothing else touched."""
import os

from edgedistill.runners import NOTE_END, NOTE_START, note_calculator


def test_the_eval_writes_its_figures_into_the_note_and_leaves_the_rest(tmp_path):
    gguf = tmp_path / "student-Q4_K_M.gguf"
    modelfile, server = tmp_path / "student-Q4_K_M.Modelfile", tmp_path / "student-Q4_K_M.server.sh"
    modelfile.write_text("FROM ./student-Q4_K_M.gguf\nPARAMETER temperature 0\n")
    server.write_text("#!/bin/sh\nexec llama-server -m student-Q4_K_M.gguf\n")
    server.chmod(0o755)
    assert note_calculator(gguf) == [modelfile, server]
    assert "Not measured yet" in modelfile.read_text()
    note_calculator(gguf, 0.384, 0.05, "shopfloor:heldout")        # the eval stage, later: replaced, not added
    text = modelfile.read_text()
    assert text.count(NOTE_START) == 1 and text.count(NOTE_END) == 1 and "Not measured yet" not in text
    assert "Measured on shopfloor:heldout: pass@1 38.4% with the calculator, 5.0% without it." in text
    assert text.endswith(f"{NOTE_END}\nFROM ./student-Q4_K_M.gguf\nPARAMETER temperature 0\n")
    script = server.read_text()
    assert script.startswith(f"#!/bin/sh\n{NOTE_START}\n# llama.cpp's server") and os.access(server, os.X_OK)
    assert script.endswith("exec llama-server -m student-Q4_K_M.gguf\n")
    assert note_calculator(tmp_path / "other.gguf") == []            # no runner files: nothing written
