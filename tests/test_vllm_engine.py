"""The vLLM offline backend's own logic (batched rounds, calculator continuation, per-row seeds, token budget).

vLLM needs a CUDA GPU and none is here, so a scripted engine with vLLM's `LLM.generate` signature stands in for it;
what this checks is ours: which prompts go out in which round, with which parameters, and what comes back.
"""
import sys
import types
from dataclasses import dataclass

import pytest

from edgedistill import UserError
from edgedistill.generation import Sampling, Token, load_generator
from edgedistill.generation.decoding import stream_completion
from edgedistill.generation.vllm import VLLMGenerator


@dataclass
class FakeParams:   # vllm.SamplingParams' fields that we set
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int


class ScriptedEngine:
    """Answers a prompt by its script entry; a continuation (prompt + the row's text so far) gets the scripted text
    after as many characters as the row holds. One token per character."""

    def __init__(self, script: dict[str, str]):
        self.script, self.calls = script, []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((list(prompts), list(params)))
        outputs = []
        for prompt, p in zip(prompts, params):
            key = next(k for k in self.script if f"<q>{k}</q>" in prompt)
            written = prompt.split("</q>\n\n", 1)[1]    # what the row holds so far
            text = self.script[key][len(written):][:p.max_tokens]
            outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text, token_ids=list(text))]))
        return outputs


class Tokenizer:
    chat_template = None   # render_prompt joins the messages

    def apply_chat_template(self, *args, **kwargs):
        raise AssertionError("no template")


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=FakeParams))


def conversation(key: str) -> list[dict]:
    return [{"role": "user", "content": f"<q>{key}</q>"}]


def test_rows_with_right_arithmetic_finish_in_one_batched_call(fake_vllm):
    engine = ScriptedEngine({"a": "Answer: <<2*3=6>>\nReason: six.", "b": "Answer: 4\nReason: four."})
    generator = VLLMGenerator(engine, Tokenizer())
    texts = generator.generate([conversation("a"), conversation("b")],
                               Sampling(max_new_tokens=100, temperature=0.7, stop_after_answer=False, seed=40))
    assert texts == ["Answer: <<2*3=6>>\nReason: six.", "Answer: 4\nReason: four."]
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 2               # one call, both rows
    assert [p.seed for p in engine.calls[0][1]] == [40, 41]                       # a seed per row
    assert all(p.temperature == 0.7 and p.max_tokens == 100 for p in engine.calls[0][1])
    assert generator.generated_tokens == sum(map(len, texts))


def test_wrong_arithmetic_is_cut_filled_and_continued_in_the_next_round(fake_vllm):
    wrong = "Answer: <<2*3=7>>\nReason: seven."
    engine = ScriptedEngine({"a": wrong, "b": "Answer: 4\nReason: four."})
    texts = VLLMGenerator(engine, Tokenizer()).generate(
        [conversation("a"), conversation("b")], Sampling(max_new_tokens=100, stop_after_answer=False))
    # round 2 sends only row a, continuing after the calculator's value
    assert len(engine.calls) == 2 and len(engine.calls[1][0]) == 1
    assert engine.calls[1][0][0].endswith("Answer: <<2*3=6>>")
    assert engine.calls[1][1][0].max_tokens == 100 - len(wrong)                  # the budget already spent is gone
    assert texts == ["Answer: <<2*3=6>>\nReason: seven.", "Answer: 4\nReason: four."]


def test_stop_after_answer_truncates_and_greedy_uses_top_p_one(fake_vllm):
    engine = ScriptedEngine({"a": "Answer: 4\nReason: four."})
    texts = VLLMGenerator(engine, Tokenizer()).generate([conversation("a")], Sampling(top_p=0.9))
    assert texts == ["Answer: 4"]
    assert engine.calls[0][1][0].top_p == 1.0 and engine.calls[0][1][0].temperature == 0.0


def test_the_app_gets_a_vllm_completion_in_one_piece(fake_vllm):
    """vLLM has no single-row decode of ours: stream_completion yields its whole (continued) text as one step."""
    engine = ScriptedEngine({"a": "Answer: <<2*3=7>>\nReason: seven."})
    steps = list(stream_completion(VLLMGenerator(engine, Tokenizer()), conversation("a"), Sampling()))
    assert steps == [Token("Answer: <<2*3=6>>", None)] and len(engine.calls) == 1


def test_without_vllm_installed_the_error_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)   # import vllm raises ImportError
    with pytest.raises(UserError, match="pip install vllm"):
        load_generator("smollm2-135m-instruct", backend="vllm")
