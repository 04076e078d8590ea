"""Generation with the calculator: forced fills, token split, stop at the end of the Answer line."""
import torch

from edgedistill.generate import CalculatorFill, Sampling, StopAfterAnswer, TransformersGenerator, encode_completion
from edgedistill.models import load_model


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_calculator_fill_forces_value_and_close(smollm_tokenizer):
    tok = smollm_tokenizer
    prompt = ids(tok, "Q")
    generated = ids(tok, "Answer: <<(12+3)*4=")
    fill = CalculatorFill(tok, len(prompt), batch_size=2)
    other = ids(tok, "Answer: maybe")
    sequence = torch.tensor([prompt + generated, prompt + [tok.pad_token_id] * (len(generated) - len(other)) + other])
    forced = []
    for _ in range(len(ids(tok, "60>>"))):
        scores = fill(sequence, torch.zeros(2, len(tok)))
        token = int(scores[0].argmax())
        assert torch.isinf(scores[0]).sum() == len(tok) - 1      # exactly one token allowed
        assert not torch.isinf(scores[1]).any()                  # the other row decodes freely
        forced.append(token)
        sequence = torch.cat([sequence, torch.tensor([[token], [0]])], dim=1)
    assert tok.decode(forced) == "60>>"
    assert not torch.isinf(fill(sequence, torch.zeros(2, len(tok)))[0]).any()   # then the model goes on


def test_calculator_fill_leaves_invalid_expression_alone(smollm_tokenizer):
    tok = smollm_tokenizer
    prompt = ids(tok, "Q")
    fill = CalculatorFill(tok, len(prompt), batch_size=1)
    for text in ["Answer: <<2**999=", "Answer: <<x+1=", "Answer: <<1/0="]:
        scores = fill(torch.tensor([prompt + ids(tok, text)]), torch.zeros(1, len(tok)))
        assert not torch.isinf(scores).any(), text


def test_encode_completion_splits_at_calculator_boundaries(smollm_tokenizer):
    tok = smollm_tokenizer
    text = "Answer: <<60*7.5=450>>\nReason: <<2*3=6>> parts."
    encoded = encode_completion(tok, text)
    assert tok.decode(encoded) == text
    pieces = ["Answer: <<60*7.5=", "450>>", "\nReason: <<2*3=", "6>>", " parts."]
    assert encoded == [i for piece in pieces for i in ids(tok, piece)]


def test_stop_after_answer(smollm_tokenizer):
    tok = smollm_tokenizer
    prompt = ids(tok, "Q")
    stop = StopAfterAnswer(tok, len(prompt))
    rows = ["Answer: <<2*3=6>>\n", "Answer: <<2*3=", "Let me think\n"]
    width = max(len(ids(tok, r)) for r in rows)
    batch = torch.tensor([prompt + [tok.pad_token_id] * (width - len(ids(tok, r))) + ids(tok, r) for r in rows])
    assert stop(batch, None).tolist() == [True, False, False]


def test_generator_runs_batched_and_is_deterministic(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    gen = TransformersGenerator(model, tok)
    conversations = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(5)]
    first = gen.generate(conversations, Sampling(max_new_tokens=6), batch_size=2)
    second = gen.generate(conversations, Sampling(max_new_tokens=6), batch_size=5)
    assert len(first) == 5 and first == second        # batching and padding do not change greedy output


def test_shared_prefix_cache_gives_the_same_greedy_output(tiny_model_dir):
    from edgedistill.generate import render_prompt, shared_prefix
    model, tok = load_model(str(tiny_model_dir))
    gen = TransformersGenerator(model, tok)
    system = {"role": "system", "content": "You answer shop-floor questions. " * 6}
    conversations = [[system, {"role": "user", "content": q}] for q in
                     ["What is 5 + 5?", "A press makes 60 parts an hour for 7.5 hours; how many parts?", "Hi"]]
    batched = gen.generate(conversations, Sampling(max_new_tokens=8, stop_after_answer=False), batch_size=3)
    prompts = [tok.encode(render_prompt(tok, c), add_special_tokens=False) for c in conversations]
    assert len(shared_prefix(prompts)) >= 30
    alone = [gen._generate_batch([], None, [p], Sampling(max_new_tokens=8, stop_after_answer=False))[0]
             for p in prompts]
    assert batched == alone


def test_shared_prefix_leaves_each_prompt_a_token():
    from edgedistill.generate import shared_prefix
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[1, 2, 3], [1, 9]]) == [1]
    assert shared_prefix([[5], [6]]) == []
