"""Generation with the calculator: forced fills, token split, stop at the end of the Answer line; the backend
contract (protocols) and the package's import rules."""
import subprocess
import sys

import torch

from edgedistill.generation import Backend, PromptCompleter, Row, Sampling, Scorer, SingleRowDecoder, \
    encode_completion, render_prompt, shared_prefix
from edgedistill.generation.decoding import choose_tokens, stream_completion, stream_row
from edgedistill.generation.transformers import TransformersGenerator
from edgedistill.models import load_model


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def row_for(tok, sampling):
    return Row(sampling, lambda ids: tok.decode(ids, skip_special_tokens=True),
               lambda text: tok.encode(text, add_special_tokens=False), {tok.eos_token_id})


def test_calculator_fill_forces_value_and_close(smollm_tokenizer):
    tok = smollm_tokenizer
    row = row_for(tok, Sampling(max_new_tokens=50, stop_after_answer=False))
    for token in ids(tok, "Answer: <<(12+3)*4="):
        assert row.step(token) == token                 # the model's own choices pass through
    anything = ids(tok, " no")[0]
    forced = [row.step(anything) for _ in ids(tok, "60>>")]   # whatever the model picks, the value is fed
    assert tok.decode(forced) == "60>>"
    assert row.step(anything) == anything                # then the model goes on
    assert row.text == "Answer: <<(12+3)*4=60>> no"


def test_calculator_fill_leaves_invalid_expression_alone(smollm_tokenizer):
    tok = smollm_tokenizer
    for text in ["Answer: <<2**999=", "Answer: <<x+1=", "Answer: <<1/0="]:
        row = row_for(tok, Sampling(max_new_tokens=50))
        for token in ids(tok, text):
            row.step(token)
        assert row.queue == [], text


def test_calculator_off_forces_nothing(smollm_tokenizer):
    tok = smollm_tokenizer
    row = row_for(tok, Sampling(max_new_tokens=50, calculator=False))
    for token in ids(tok, "Answer: <<2*3="):
        row.step(token)
    assert row.queue == []


def test_encode_completion_splits_at_calculator_boundaries(smollm_tokenizer):
    tok = smollm_tokenizer
    text = "Answer: <<60*7.5=450>>\nReason: <<2*3=6>> parts."
    encoded = encode_completion(tok, text)
    assert tok.decode(encoded) == text
    pieces = ["Answer: <<60*7.5=", "450>>", "\nReason: <<2*3=", "6>>", " parts."]
    assert encoded == [i for piece in pieces for i in ids(tok, piece)]


def test_stop_after_answer_eos_and_budget(smollm_tokenizer):
    tok = smollm_tokenizer

    def feed(text, sampling):
        row = row_for(tok, sampling)
        fed = [row.step(t) for t in ids(tok, text)]
        return fed.index(None) if None in fed else len(fed)

    answer = "Answer: <<2*3=6>>\nReason: six"
    stop_at = len(ids(tok, "Answer: <<2*3=6>>\n"))
    assert feed(answer, Sampling(max_new_tokens=50)) == stop_at - 1          # stops on the newline token
    assert feed(answer, Sampling(max_new_tokens=50, stop_after_answer=False)) == len(ids(tok, answer))
    assert feed("Let me think\nabout it", Sampling(max_new_tokens=50)) == len(ids(tok, "Let me think\nabout it"))
    assert feed("one two three four", Sampling(max_new_tokens=2)) == 1    # the second token is the last
    row = row_for(tok, Sampling())
    assert row.step(tok.eos_token_id) is None and row.tokens == []


def test_choose_tokens_greedy_and_seeded_sampling():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert choose_tokens(logits, Sampling(), None) == [1, 0]
    draw = lambda seed: choose_tokens(logits.repeat(50, 1), Sampling(temperature=1.0), torch.Generator().manual_seed(seed))  # noqa: E731
    assert draw(3) == draw(3) and draw(3) != draw(4)
    nucleus = choose_tokens(logits.repeat(50, 1), Sampling(temperature=1.0, top_p=0.5), torch.Generator().manual_seed(0))
    assert set(nucleus[0::2]) == {1} and set(nucleus[1::2]) == {0}   # top_p 0.5 keeps only the top token here
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    draws = choose_tokens(probs.log().expand(20000, 4), Sampling(temperature=1.0), torch.Generator().manual_seed(1))
    counts = torch.bincount(torch.tensor(draws), minlength=4).double() / len(draws)
    assert torch.allclose(counts, probs.double(), atol=0.015) and counts[3] == 0   # the distribution, no more


def test_generator_runs_batched_and_is_deterministic(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    gen = TransformersGenerator(model, tok)
    conversations = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(5)]
    first = gen.generate(conversations, Sampling(max_new_tokens=6), batch_size=2)
    second = gen.generate(conversations, Sampling(max_new_tokens=6), batch_size=5)
    assert len(first) == 5 and first == second        # batching and padding do not change greedy output


def test_shared_prefix_cache_gives_the_same_greedy_output(tiny_model_dir):
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


def test_repeated_prompts_are_prefilled_once_and_still_sampled_apart(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    gen = TransformersGenerator(model, tok)
    a, b = [{"role": "user", "content": "What is 6 times 7?"}], [{"role": "user", "content": "Name a sensor."}]
    greedy = Sampling(max_new_tokens=8, stop_after_answer=False)
    assert gen.generate([a, b, a, a], greedy, batch_size=4) == \
        [gen.generate([c], greedy, batch_size=1)[0] for c in (a, b, a, a)]
    rows = []
    original = model.forward
    model.forward = lambda *args, **kw: rows.append(kw["input_ids"].shape[0]) or original(*args, **kw)
    sampled = gen.generate([a] * 4, Sampling(max_new_tokens=8, temperature=1.0, stop_after_answer=False, seed=1))
    model.forward = original
    assert rows[:2] == [1, 1]                # shared prefix, then one prompt row prefilled for four samples
    assert rows[2] == 4                      # then four rows decode
    assert len(set(sampled)) > 1             # each row still draws its own tokens


def test_shared_prefix_leaves_each_prompt_a_token():
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[1, 2, 3], [1, 9]]) == [1]
    assert shared_prefix([[5], [6]]) == []


def test_own_decoding_loop_matches_transformers_generate(tiny_model_dir):
    """Parity: with the calculator and the answer stop off, our loop (rows leaving the batch as they finish, EOS
    included) produces exactly `transformers.generate`'s greedy tokens, prompt by prompt."""
    model, tok = load_model(str(tiny_model_dir))
    gen = TransformersGenerator(model, tok)
    conversations = [[{"role": "user", "content": q}] for q in ["Hi", "What is 12 times 7.5 in total parts?", "x"]]
    sampling = Sampling(max_new_tokens=12, stop_after_answer=False, calculator=False)
    ours = gen.generate(conversations, sampling, batch_size=3)
    for conversation, text in zip(conversations, ours):
        prompt = torch.tensor([tok.encode(render_prompt(tok, conversation), add_special_tokens=False)])
        reference = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=sorted(gen.eos),
                                   pad_token_id=tok.pad_token_id)
        assert text == tok.decode(reference[0, prompt.shape[1]:], skip_special_tokens=True).strip()


def test_streamed_completion_equals_the_batched_one_on_transformers_and_llama_cpp(tiny_model_dir):
    """The app streams with `stream_completion`; evaluation scores with `generate`: the same greedy text, one step
    per token, each step's text extending the last, the model's tokens with a probability in (0, 1]."""
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.models import resolve
    model, tok = load_model(str(tiny_model_dir))
    messages = [{"role": "user", "content": "A line makes 48 an hour. How many in 7.5 hours?"}]
    for generator in (TransformersGenerator(model, tok), LlamaCppGenerator(str(resolve("smollm2-135m-instruct").path))):
        assert isinstance(generator, Backend) and isinstance(generator, SingleRowDecoder)
        sampling = Sampling(max_new_tokens=24, stop_after_answer=False)
        steps = list(stream_completion(generator, messages, sampling))
        assert steps and steps[-1].text.strip() == generator.generate([messages], sampling)[0]
        assert generator.generated_tokens == len(steps)     # one step per completion token
        assert "<<" not in steps[-1].text          # no calculator here: every token is the model's
        assert all(s.probability is not None and 0 < s.probability <= 1 for s in steps)
        assert all(b.text.startswith(a.text) for a, b in zip(steps, steps[1:]))    # what the app shows only grows


def test_stream_marks_calculator_tokens_as_not_the_models(smollm_tokenizer):
    """A row that writes `<<6*7=` gets `42>>` forced: those steps carry no model probability, and the stream's text
    grows by one token per step across the fill too."""
    tok = smollm_tokenizer
    script = ids(tok, "Answer: <<6*7=")
    vocab = len(tok)

    def logits_for(position):
        logits = torch.full((1, vocab), -30.0)
        logits[0, script[position] if position < len(script) else tok.eos_token_id] = 0.0
        return logits
    fed = []

    def feed(token):
        fed.append(token)
        return logits_for(len(fed))
    steps = list(stream_row(logits_for(0), feed, row_for(tok, Sampling(max_new_tokens=20, stop_after_answer=False)),
                            Sampling(max_new_tokens=20, stop_after_answer=False)))
    written = script + ids(tok, "42>>")
    assert [s.text for s in steps] == [tok.decode(written[:n]) for n in range(1, len(written) + 1)]
    assert steps[-1].text == "Answer: <<6*7=42>>"
    assert [s.probability is None for s in steps] == [False] * len(script) + [True] * (len(written) - len(script))
    assert all(s.probability > 0.99 for s in steps[:len(script)])
    assert fed == written            # the forced tokens went through the model too: its KV cache holds them


def test_every_backend_keeps_the_contract_its_callers_rely_on():
    """The protocols are what callers may use: a batched `generate` and a `render` method everywhere, the single-row
    decode only where our own loop runs, `complete` on the backends that take a rendered prompt; the export stage's
    scorers are Scorers."""
    from types import SimpleNamespace
    from edgedistill.export.parity import GgufScorer, OnnxScorer, SourceModel
    from edgedistill.generation.llamacpp import LlamaCppGenerator
    from edgedistill.generation.onnx import OnnxGenerator
    from edgedistill.generation.openai_api import OpenAIGenerator
    from edgedistill.generation.vllm import VLLMGenerator
    for backend in (TransformersGenerator, LlamaCppGenerator, OnnxGenerator, OpenAIGenerator, VLLMGenerator):
        assert callable(getattr(backend, "render", None)) and callable(getattr(backend, "generate", None)), backend
    assert all(issubclass(backend, PromptCompleter) for backend in (LlamaCppGenerator, OnnxGenerator, OpenAIGenerator))
    assert all(issubclass(scorer, Scorer) for scorer in (GgufScorer, OnnxScorer, SourceModel))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6 times 7?"}]
    server = OpenAIGenerator("http://127.0.0.1:9/v1", render=lambda m: "<" + m[-1]["content"] + ">", model="x")
    engine = VLLMGenerator(llm=None, tokenizer=SimpleNamespace(chat_template=None))
    for remote in (server, engine):   # these decode in their own loop: no single row to stream from
        assert isinstance(remote, Backend) and not isinstance(remote, SingleRowDecoder)
        assert remote.generated_tokens == 0
    assert server.render(messages) == "<6 times 7?>"
    assert engine.render(messages) == "Be brief.\n\n6 times 7?\n\n"          # no template: the plain prompt


def test_the_package_and_its_data_types_import_without_torch():
    """Sampling and the Row rules are plain data: a module that builds a Sampling need not import torch, and the
    package imports no backend until load_generator is called."""
    code = ("import sys\n"
            "import edgedistill.generation, edgedistill.generation.base, edgedistill.generation.continuation\n"
            "import edgedistill.generation.templates\n"
            "heavy = {'torch', 'transformers', 'numpy', 'llama_cpp', 'onnxruntime_genai'} & set(sys.modules)\n"
            "backends = [m for m in sys.modules if m.split('.')[-1] in ('transformers', 'llamacpp', 'onnx', "
            "'openai_api', 'vllm') and m.startswith('edgedistill.generation.')]\n"
            "print(sorted(heavy), backends)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[] []", result.stdout + result.stderr


def test_llama_cpp_batches_prompts_that_fill_a_decode_exactly():
    """Rows whose suffixes fill one llama_decode to the last token, then a long prompt: every row that reads logits
    must be in the same decode call (a reader left in an earlier chunk got no logits: the 1.5B teacher crashed with
    'NULL pointer access' on compositions). Each row's first greedy token equals the one it gets alone (later tokens
    may differ in the last bits between batch layouts)."""
    from edgedistill.generation.llamacpp import BATCH_TOKENS, LlamaCppGenerator
    from edgedistill.models import resolve
    generator = LlamaCppGenerator(str(resolve("smollm2-135m-instruct").path))
    prefix = [1, 2] + list(range(1000, 1018))
    lengths = [250, 250, BATCH_TOKENS - 500, 300, 40]    # 250 + 250 + 12 fill one decode; 300 is a long prompt
    prompts = [prefix + [5000 + i] + list(range(2000 + i, 2000 + i + n - 1)) for i, n in enumerate(lengths)]
    sampling = Sampling(max_new_tokens=1, stop_after_answer=False)
    together = generator._generate_tokens(prompts, sampling, batch_size=len(prompts), progress=None)
    alone = [generator._generate_tokens([p], sampling, batch_size=1, progress=None)[0] for p in prompts]
    assert together == alone
