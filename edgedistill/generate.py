"""Generation with the calculator, batched, on any causal LM transformers loads.

The decoding loop is ours (both backends share its per-row rules, `Row`):
- calculator: when a row's text ends in an open `<<expr=`, the calculator's value and `>>` are queued as that row's
  next tokens and fed one per step instead of the model's choice; the KV cache is kept, so a fill costs one forward
  per forced token and no restart.
- stop after the answer: a row stops at the end of its `Answer:` line when only the answer is wanted (evaluation,
  confidence samples), so scoring 200 questions costs about 20 tokens each.
- finished rows leave the batch at once (their KV rows are dropped), so a batch does not run at the pace of its
  longest row, which `transformers.generate` does.
Training targets are tokenised with `encode_completion`, which splits at every calculator fill, so the model is
trained on exactly the token sequence it produces at inference.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm import tqdm
from transformers import DynamicCache

from edgedistill.calculator import ANNOTATION, fill_for

ANSWER_LINE_DONE = re.compile(r"Answer:[^\n]*\S[^\n]*\n")


@dataclass
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    stop_after_answer: bool = True    # stop each row at the end of its Answer: line
    calculator: bool = True
    seed: int = 0


@dataclass
class Row:
    """One completion being decoded. `step(chosen)` takes the model's choice, or instead the calculator's forced
    token, and returns the token to feed next, or None once the row is finished."""
    sampling: Sampling
    decode: Callable[[list[int]], str]
    encode: Callable[[str], list[int]]
    eos: set
    tokens: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)    # calculator tokens still to force
    text: str = ""

    def step(self, chosen: int) -> int | None:
        token = self.queue.pop(0) if self.queue else chosen
        if token in self.eos:
            return None
        self.tokens.append(token)
        self.text = self.decode(self.tokens)
        if self.sampling.calculator and not self.queue:
            fill = fill_for(self.text)
            if fill:
                self.queue = self.encode(fill)
        if len(self.tokens) >= self.sampling.max_new_tokens:
            return None
        if self.sampling.stop_after_answer and not self.queue and ANSWER_LINE_DONE.search(self.text):
            return None
        return token


def choose_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> list[int]:
    """Next token per row: argmax, or a draw at `temperature` from the smallest set holding `top_p` of the mass."""
    if sampling.temperature <= 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        sorted_probs[(sorted_probs.cumsum(-1) - sorted_probs) > sampling.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    # Inverse-CDF draw: one uniform per row against the cumulative distribution (float64, so the tail of a
    # 50k-token vocabulary keeps its mass). torch.multinomial draws an exponential per vocabulary entry instead,
    # 84 ms per step for 64 rows here, a sixth of a sampling run.
    cdf = probs.double().cumsum(-1)
    uniform = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, uniform).clamp(max=probs.shape[-1] - 1).squeeze(-1).tolist()


@dataclass
class Token:
    """One step of a streamed completion."""
    text: str                    # the completion so far (calculator values filled in)
    probability: float | None    # the model's probability of this token at temperature 1; None: the calculator's


def stream_row(first_logits: torch.Tensor, feed: Callable[[int], torch.Tensor], row: Row, sampling: Sampling,
               generator: torch.Generator | None = None) -> Iterator[Token]:
    """Decode one completion token by token: `first_logits` ([1, vocab]) are the prompt's, `feed(token)` runs one
    token through the model and returns the next logits. The same Row rules as the batched loops."""
    logits = first_logits
    while True:
        forced = bool(row.queue)
        before = len(row.tokens)
        token = row.step(choose_tokens(logits, sampling, generator)[0])
        if len(row.tokens) > before:
            chosen = row.tokens[-1]
            probability = None if forced else float(torch.softmax(logits[0].float(), -1)[chosen])
            yield Token(row.text, probability)
        if token is None:
            return
        logits = feed(token)


def stream_completion(generator, messages: list[dict], sampling: Sampling) -> Iterator[Token]:
    """One completion of a conversation, streamed, on any backend with a single-row decode (transformers,
    llama.cpp, ONNX); a backend without one (a server, vLLM) yields its whole completion at once."""
    if not hasattr(generator, "single_row"):
        text = generator.generate([messages], sampling, batch_size=1)[0]
        yield Token(text, None)
        return
    ids = generator.prompt_ids(messages)
    first_logits, feed = generator.single_row(ids, sampling.max_new_tokens)
    row = Row(sampling, generator.decode, generator.encode, generator.eos)
    yield from stream_row(first_logits, feed, row, sampling, torch.Generator().manual_seed(sampling.seed))


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The model's own chat template, with the assistant turn opened; plain text for models without one."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def encode_completion(tokenizer, completion: str, calculator: bool = True) -> list[int]:
    """Token ids of a completion as the calculator runtime produces them: split after each `<<expr=` and after the
    filled `value>>`, each piece tokenised on its own (the model writes up to `=`, the runtime writes the rest)."""
    return encode_with_calculator_flags(tokenizer, completion, calculator)[0]


def encode_with_calculator_flags(tokenizer, completion: str, calculator: bool = True) -> tuple[list[int], list[bool]]:
    """(token ids, written by the calculator?) per token: on-policy RL leaves the calculator's tokens out of the
    policy gradient, since the model did not choose them."""
    if not calculator:
        ids = tokenizer.encode(completion, add_special_tokens=False)
        return ids, [False] * len(ids)
    pieces, cut = [], 0
    for match in ANNOTATION.finditer(completion):
        value_start = match.start(2)
        pieces += [(completion[cut:value_start], False), (completion[value_start:match.end()], True)]
        cut = match.end()
    pieces.append((completion[cut:], False))
    ids: list[int] = []
    forced: list[bool] = []
    for piece, by_calculator in pieces:
        if piece:
            piece_ids = tokenizer.encode(piece, add_special_tokens=False)
            ids += piece_ids
            forced += [by_calculator] * len(piece_ids)
    return ids, forced


class TransformersGenerator:
    """Batched generation with the calculator for a loaded (model, tokenizer)."""

    backend = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = getattr(model.generation_config, "eos_token_id", None)
        self.eos = {tokenizer.eos_token_id} | set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.generated_tokens = 0   # completion tokens so far, for progress reports (tokens/s)

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 16,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order.

        Rows are sorted by length so batches pad little. The token prefix every prompt shares (system turn, worked
        examples) is run through the model once; each batch starts from a copy of its KV cache, so a few-shot
        prompt costs only its question.
        """
        prompts = [self.prompt_ids(m) for m in conversations]
        prefix = shared_prefix(prompts)
        prefix_cache = self._prefill(prefix) if len(prefix) >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            prefix = []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        generator = torch.Generator().manual_seed(sampling.seed)
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            suffixes = [prompts[i][len(prefix):] for i in rows]
            for row, text in zip(rows, self._generate_batch(prefix, prefix_cache, suffixes, sampling, generator)):
                outputs[row] = text
            bar.update(len(rows))
        bar.close()
        return outputs

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.encode(render_prompt(self.tokenizer, messages), add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def single_row(self, ids: list[int], max_new_tokens: int = 0):
        """(the prompt's next-token logits [1, vocab], feed(token) -> the next logits), on a KV cache of its own."""
        cache = DynamicCache()

        def run(input_ids: list[int]) -> torch.Tensor:
            with torch.inference_mode():
                return self.model(input_ids=torch.tensor([input_ids]), past_key_values=cache, use_cache=True,
                                  logits_to_keep=1).logits[:, -1]
        return run(ids), lambda token: run([token])

    def _prefill(self, prefix: list[int]):
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return cache

    def _generate_batch(self, prefix: list[int], prefix_cache, suffixes: list[list[int]], sampling: Sampling,
                        generator: torch.Generator | None = None) -> list[str]:
        """[shared prefix][padding][suffix] per row; the padding is masked, so positions continue after the prefix.

        Rows with the same prompt (a teacher's k samples of one question) are prefilled once and their KV rows
        copied: with k = 4 the prompt costs a quarter.
        """
        pad = self.tokenizer.pad_token_id
        unique: dict[tuple, int] = {}
        row_of = [unique.setdefault(tuple(s), len(unique)) for s in suffixes]
        distinct = [list(s) for s in unique]
        width = max(len(s) for s in distinct)
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in distinct])
        mask = torch.tensor([[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in distinct])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(distinct))
        else:
            cache = DynamicCache()
        rows = [Row(sampling, self.decode, self.encode, self.eos) for _ in suffixes]
        active = list(range(len(rows)))            # rows still decoding, in the cache's batch order
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions[:, -width:],
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position = positions[:, -1] + 1
        if len(distinct) < len(suffixes):          # copy each prompt's KV rows to every row that asked for it
            index = torch.tensor(row_of)
            cache.batch_select_indices(index)
            logits, mask, next_position = logits[index], mask[index], next_position[index]
        while True:
            chosen = choose_tokens(logits, sampling, generator)
            fed = [rows[r].step(token) for r, token in zip(active, chosen)]
            keep = [i for i, token in enumerate(fed) if token is not None]
            if not keep:
                break
            if len(keep) < len(active):           # drop finished rows from the batch and the cache
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, next_position = mask[index], next_position[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, torch.ones(len(keep), 1, dtype=mask.dtype)], dim=1)
            logits = self.model(input_ids=torch.tensor([[fed[i]] for i in keep]), attention_mask=mask,
                                position_ids=next_position[:, None], past_key_values=cache,
                                use_cache=True).logits[:, -1]
            next_position = next_position + 1
        self.generated_tokens += sum(len(row.tokens) for row in rows)
        return [row.text.strip() for row in rows]


MIN_SHARED_PREFIX = 16   # tokens; below this a shared prefill saves less than the cache copies cost


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix common to all prompts, leaving every prompt at least one token of its own."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    length = 0
    first = prompts[0]
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return first[:length]


def load_generator(spec: str, allow_network: bool = False, backend: str = "auto", template: str | None = None,
                   threads: int | None = None):
    """A generator for anything the resolver takes, or for an OpenAI-compatible server's URL.

    backend "auto": an http(s):// URL goes to that server (`template`: whose chat template renders the prompts);
    a GGUF file runs on llama.cpp when llama-cpp-python is installed, everything else (and a GGUF without
    llama.cpp, after dequantising) on transformers; a folder with genai_config.json (an ONNX export) on
    onnxruntime-genai. "transformers", "llama.cpp", "onnx" or "vllm" (GPU) force one. `threads`: CPU threads for
    llama.cpp and ONNX (default all cores; on a machine busy with other work, fewer decode much faster).
    """
    from edgedistill.models import load_model, resolve
    if str(spec).startswith(("http://", "https://")):
        from edgedistill.openai_api import load_openai_generator
        return load_openai_generator(str(spec), template, allow_network)
    if backend == "vllm":
        from edgedistill.vllm_engine import load_vllm_generator
        return load_vllm_generator(spec, allow_network)
    from edgedistill.onnx_runtime import OnnxGenerator, is_onnx_folder
    if is_onnx_folder(spec) or backend == "onnx":     # the export stage's ONNX folder (genai_config.json)
        return OnnxGenerator(str(spec), threads)
    resolved = resolve(spec, allow_network)
    if resolved.kind == "gguf" and backend in ("auto", "llama.cpp"):
        try:
            import llama_cpp  # noqa: F401
            use_llama_cpp = True
        except ImportError:
            use_llama_cpp = backend == "llama.cpp"   # then LlamaCppGenerator raises a clear error
        if use_llama_cpp:
            from edgedistill.llamacpp import LlamaCppGenerator
            return LlamaCppGenerator(str(resolved.path), threads=threads)
    model, tokenizer = load_model(spec, allow_network)
    return TransformersGenerator(model, tokenizer)
