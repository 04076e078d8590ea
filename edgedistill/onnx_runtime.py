"""ONNX backend (onnxruntime-genai): the folder the export stage writes, with the calculator, on the CPU.

The folder holds model.onnx (+ .data), genai_config.json and the tokenizer files the model builder saved. Prompts
are rendered and tokenised by the transformers tokenizer saved beside the model, the same template as training, and
decoding is our own loop on onnxruntime-genai's generator: `append_tokens` feeds the chosen (or the calculator's
forced) token, `get_logits` reads the next distribution. One conversation at a time: a row's forced calculator
tokens would desynchronise a batch, and at 135M parameters a CPU decodes one row near its memory bandwidth anyway.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgedistill import UserError
from edgedistill.generate import Row, Sampling, render_prompt, stream_row


def is_onnx_folder(spec) -> bool:
    return Path(str(spec)).is_dir() and (Path(str(spec)) / "genai_config.json").is_file()


def load_onnx(folder: Path, threads: int | None = None):
    """(og.Model, the genai config as a dict), with `threads` intra-op threads (default: all cores)."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        raise UserError("ONNX models need onnxruntime-genai: pip install onnxruntime-genai") from None
    config_path = folder / "genai_config.json"
    try:
        genai_config = json.loads(config_path.read_text())
        config = og.Config(str(folder))
        config.clear_providers()                        # the CPU
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads or os.cpu_count(), "inter_op_num_threads": 1}}}}))
        return og.Model(config), genai_config
    except (OSError, ValueError, RuntimeError) as exc:     # onnxruntime raises RuntimeError on a damaged file
        raise UserError(f"{folder}: onnxruntime-genai cannot load this ONNX model ({str(exc).strip()[:300]}); "
                        f"it may be truncated: export it again") from None


class OnnxGenerator:
    backend = "onnx"

    def __init__(self, folder: str, threads: int | None = None):
        from transformers import AutoTokenizer
        self.folder = Path(folder)
        self.model, genai_config = load_onnx(self.folder, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        eos = genai_config["model"].get("eos_token_id", self.tokenizer.eos_token_id)
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.context = int(genai_config["model"].get("context_length", 2048))
        self.generated_tokens = 0

    def render(self, messages: list[dict]) -> str:
        return render_prompt(self.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generator_for(self, prompt_ids: list[int], max_new_tokens: int):
        """An onnxruntime-genai generator with the prompt's KV cache filled; `get_logits()` is the next token's."""
        import onnxruntime_genai as og
        params = og.GeneratorParams(self.model)
        # room for the calculator's forced tokens too; greedy/sampling is chosen by us, from the logits
        params.set_search_options(max_length=min(self.context, len(prompt_ids) + 2 * max_new_tokens + 16),
                                  do_sample=False)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.array(prompt_ids, dtype=np.int32))
        return generator

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.encode(self.render(messages))

    def single_row(self, ids: list[int], max_new_tokens: int):
        """(the prompt's next-token logits [1, vocab], feed(token) -> the next logits)."""
        if len(ids) + max_new_tokens > self.context:
            raise UserError(f"the prompt has {len(ids)} tokens; with {max_new_tokens} new tokens it exceeds the "
                            f"model's {self.context}-token context")
        generator = self.generator_for(ids, max_new_tokens)

        def logits() -> torch.Tensor:
            return torch.from_numpy(np.array(generator.get_logits())[0, -1:].astype(np.float32))

        def feed(token: int) -> torch.Tensor:
            generator.append_tokens(np.array([token], dtype=np.int32))
            return logits()
        return logits(), feed

    def complete_ids(self, prompt_ids: list[int], sampling: Sampling, seed_generator=None) -> list[int]:
        first_logits, feed = self.single_row(prompt_ids, sampling.max_new_tokens)
        row = Row(sampling, self.decode, self.encode, self.eos)
        for _ in stream_row(first_logits, feed, row, sampling, seed_generator):
            pass
        self.generated_tokens += len(row.tokens)
        return row.tokens

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 1,
                 progress: str | None = None) -> list[str]:
        """One completion per conversation, in order (`batch_size` is accepted for the common interface)."""
        seed_generator = torch.Generator().manual_seed(sampling.seed)
        outputs = []
        for messages in tqdm(conversations, desc=progress, disable=progress is None, unit="q"):
            ids = self.complete_ids(self.encode(self.render(messages)), sampling, seed_generator)
            outputs.append(self.decode(ids).strip())
        return outputs
