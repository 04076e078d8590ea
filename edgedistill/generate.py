"""Generation with the calculator, batched, on any causal LM transformers loads.

Decoding goes token by token through `transformers.generate`; two small hooks make it ours:
- `CalculatorFill` (a logits processor): when a row's text ends in an open `<<expr=`, the calculator's value and
  `>>` are queued as that row's next tokens and forced one per step (logits of every other token set to -inf).
  The KV cache is kept, so a fill costs one forward per forced token and no restart.
- `StopAfterAnswer` (a stopping criterion): a row stops at the end of its `Answer:` line when only the answer is
  wanted (evaluation), so scoring 200 questions costs about 20 tokens each.
Training targets are tokenised with `encode_completion`, which splits at every calculator fill, so the model is
trained on exactly the token sequence it produces at inference.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import DynamicCache, LogitsProcessor, StoppingCriteria, StoppingCriteriaList

from edgedistill.calculator import ANNOTATION, fill_for


@dataclass
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.0          # 0: greedy
    top_p: float = 1.0
    stop_after_answer: bool = True    # stop each row at the end of its Answer: line
    calculator: bool = True
    seed: int = 0


class CalculatorFill(LogitsProcessor):
    def __init__(self, tokenizer, prompt_length: int, batch_size: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length
        self.queues: list[list[int]] = [[] for _ in range(batch_size)]
        # Only tokens whose text ends with "=" can open a fill: check rows only after one of those.
        self.eq_tokens = {i for i, piece in enumerate(tokenizer.convert_ids_to_tokens(range(len(tokenizer))))
                          if piece and piece.endswith("=")}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(input_ids.shape[0]):
            queue = self.queues[row]
            if not queue and input_ids.shape[1] > self.prompt_length and int(input_ids[row, -1]) in self.eq_tokens:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
                fill = fill_for(text)
                if fill:
                    queue.extend(self.tokenizer.encode(fill, add_special_tokens=False))
            if queue:
                forced = queue.pop(0)
                scores[row] = float("-inf")
                scores[row, forced] = 0.0
        return scores


class StopAfterAnswer(StoppingCriteria):
    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
            done[row] = re.search(r"Answer:[^\n]*\S[^\n]*\n", text) is not None
        return done


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The model's own chat template, with the assistant turn opened; plain text for models without one."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def encode_completion(tokenizer, completion: str, calculator: bool = True) -> list[int]:
    """Token ids of a completion as the calculator runtime produces them: split after each `<<expr=` and after the
    filled `value>>`, each piece tokenised on its own (the model writes up to `=`, the runtime writes the rest)."""
    if not calculator:
        return tokenizer.encode(completion, add_special_tokens=False)
    pieces, cut = [], 0
    for match in ANNOTATION.finditer(completion):
        value_start = match.start(2)
        pieces += [completion[cut:value_start], completion[value_start:match.end()]]
        cut = match.end()
    pieces.append(completion[cut:])
    ids: list[int] = []
    for piece in pieces:
        if piece:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    return ids


class TransformersGenerator:
    """Batched generation with the calculator for a loaded (model, tokenizer)."""

    backend = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 16,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order.

        Rows are sorted by length so batches pad little. The token prefix every prompt shares (system turn, worked
        examples) is run through the model once; each batch starts from a copy of its KV cache, so a few-shot
        prompt costs only its question.
        """
        prompts = [self.tokenizer.encode(render_prompt(self.tokenizer, m), add_special_tokens=False)
                   for m in conversations]
        prefix = shared_prefix(prompts)
        prefix_cache = self._prefill(prefix) if len(prefix) >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            prefix = []
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        outputs: list[str] = [""] * len(prompts)
        torch.manual_seed(sampling.seed)
        bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="q")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            suffixes = [prompts[i][len(prefix):] for i in rows]
            for row, text in zip(rows, self._generate_batch(prefix, prefix_cache, suffixes, sampling)):
                outputs[row] = text
            bar.update(len(rows))
        bar.close()
        return outputs

    def _prefill(self, prefix: list[int]):
        cache = DynamicCache()
        self.model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True)
        return cache

    def _generate_batch(self, prefix: list[int], prefix_cache, suffixes: list[list[int]], sampling: Sampling):
        """[shared prefix][padding][suffix] per row; the padding is masked, so positions continue after the prefix."""
        pad = self.tokenizer.pad_token_id
        width = max(len(s) for s in suffixes)
        input_ids = torch.tensor([prefix + [pad] * (width - len(s)) + s for s in suffixes])
        attention_mask = torch.tensor([[1] * len(prefix) + [0] * (width - len(s)) + [1] * len(s) for s in suffixes])
        extra = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(suffixes))
            extra["past_key_values"] = cache
        prompt_length = input_ids.shape[1]
        processors = [CalculatorFill(self.tokenizer, prompt_length, len(suffixes))] if sampling.calculator else []
        stopping = StoppingCriteriaList([StopAfterAnswer(self.tokenizer, prompt_length)]
                                        if sampling.stop_after_answer else [])
        sample = sampling.temperature > 0
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=sampling.max_new_tokens,
            do_sample=sample, temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None, top_k=None, logits_processor=processors,
            stopping_criteria=stopping, pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, **extra)
        return [self.tokenizer.decode(row[prompt_length:], skip_special_tokens=True).strip() for row in out]


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


def load_generator(spec: str, allow_network: bool = False, backend: str = "auto"):
    """A generator for anything the resolver takes.

    backend "auto": a GGUF file runs on llama.cpp when llama-cpp-python is installed, everything else (and a GGUF
    without llama.cpp, after dequantising) on transformers. "transformers" or "llama.cpp" force one.
    """
    from edgedistill.models import load_model, resolve
    resolved = resolve(spec, allow_network)
    if resolved.kind == "gguf" and backend in ("auto", "llama.cpp"):
        try:
            import llama_cpp  # noqa: F401
            use_llama_cpp = True
        except ImportError:
            use_llama_cpp = backend == "llama.cpp"   # then LlamaCppGenerator raises a clear error
        if use_llama_cpp:
            from edgedistill.llamacpp import LlamaCppGenerator
            return LlamaCppGenerator(str(resolved.path))
    model, tokenizer = load_model(spec, allow_network)
    return TransformersGenerator(model, tokenizer)
