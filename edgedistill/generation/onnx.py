"""ONNX backend (onnxruntime-genai): the folder the export stage writes, with the calculator, on the CPU or a GPU.

The folder holds model.onnx (+ .data), genai_config.json and the tokenizer files the model builder saved. Prompts
are rendered and tokenised by the transformers tokenizer saved beside the model, the same template as training, and
decoding is our own loop on onnxruntime-genai's generator: `append_tokens` feeds the chosen (or the calculator's
forced) token, `get_logits` reads the next distribution. One conversation at a time: a row's forced calculator
tokens would desynchronise a batch, and at 135M parameters a CPU decodes one row near its memory bandwidth anyway.

The model runs on CUDA when onnxruntime-genai's build has it (the `gpu` extra: onnxruntime-genai-cuda) and
EDGEDISTILL_DEVICE is not cpu (`device.onnx_provider()`), else on the CPU; the folder's own provider list is
never used, whichever it is.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edgedistill import UserError, device
from edgedistill.generation.base import Row
from edgedistill.generation.decoding import stream_row
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import render_prompt


CONFIG_FILE = "genai_config.json"
SESSION_OPTIONS = "session_options"      # in model.decoder, .encoder, .vision, .speech, .embedding, pipeline models...
PROVIDER_OPTIONS = "provider_options"

# The session_options keys onnxruntime-genai applies that only tune ONNX Runtime (threads, logging, memory arenas,
# graph optimisation: the typed fields of its model builder's builder_config.py), and the three flag entries that
# builder writes itself. An allow-list, because what the others do is open-ended: `custom_ops_library` dlopens a
# shared library (its constructor runs at once, even before model.onnx is read), `enable_profiling` writes a file
# wherever it says, and every other key becomes an ONNX Runtime session config entry, a set that grows each release.
SAFE_SESSION_OPTIONS = frozenset({"log_id", "log_severity_level", "log_verbosity_level", "intra_op_num_threads",
                                  "inter_op_num_threads", "enable_cpu_mem_arena", "enable_mem_pattern",
                                  "graph_optimization_level", PROVIDER_OPTIONS,
                                  "ep.cuda.fpa_intb_gemm", "optimization.disable_specified_optimizers",
                                  "session.use_device_allocator_for_initializers"})
# Outside session_options, a second net for sections a later onnxruntime-genai may add: a key naming a library or
# plug-in, or any value that is the path of a shared object, is refused too.
CODE_KEY_WORDS = frozenset({"lib", "libs", "library", "libraries", "plugin", "plugins", "backend"})
SHARED_OBJECT = re.compile(r"\.(so(\.[0-9]+)*|dll|dylib)$", re.IGNORECASE)


def is_onnx_folder(spec) -> bool:
    return Path(str(spec)).is_dir() and (Path(str(spec)) / CONFIG_FILE).is_file()


def read_genai_config(folder: Path) -> dict:
    """genai_config.json as data, checked before onnxruntime-genai sees the folder: a UserError when it is not a
    JSON object with a "model" object, or when it would make onnxruntime-genai load code (see `refuse_code`)."""
    path = folder / CONFIG_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text, so not a genai_config.json; export the model again") from None
    try:
        config = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        # json keeps the last of two equal keys and onnxruntime-genai's own parser applies both, so the copy we
        # check need not be the one it uses
        raise UserError(f"{path}: the key {exc.args[0]!r} appears twice in one object; remove one") from None
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: not valid JSON ({str(exc)[:200]}); export the model again") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f'{path}: not a genai_config.json (it must be a JSON object with a "model" object)')
    refuse_code(config, path)
    return config


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def refuse_code(config: dict, path: Path) -> None:
    """A UserError naming the key when the config would load code: the README promises models load as data only.

    Walked without recursion: a hostile file may nest deeper than Python's stack."""
    pending: list[tuple[str, object]] = [("", config)]
    while pending:
        where, node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if any(ord(c) < 32 for c in key):     # a NUL or newline may end the name for a C++ reader
                    _refuse(path, here, "a key with a control character")
                if key == SESSION_OPTIONS:
                    _check_session_options(value, here, path)
                elif CODE_KEY_WORDS & set(re.split(r"[^a-z]+", key.lower())):
                    _refuse(path, here, "a key that names a library or plug-in")
                pending.append((here, value))
        elif isinstance(node, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(node))
        elif isinstance(node, str) and SHARED_OBJECT.search(node.strip()):
            _refuse(path, where, f"the shared library {node.strip()!r}")


def _check_session_options(options, where: str, path: Path) -> None:
    if not isinstance(options, dict):
        raise UserError(f"{path}: {where} must be an object")
    for key in options:
        if key not in SAFE_SESSION_OPTIONS:
            _refuse(path, f"{where}.{key}", f"a session option edgedistill does not allow (it allows "
                                            f"{', '.join(sorted(SAFE_SESSION_OPTIONS))})")
    providers = options.get(PROVIDER_OPTIONS, [])
    if not isinstance(providers, list):
        raise UserError(f"{path}: {where}.{PROVIDER_OPTIONS} must be a list")
    # We pick the provider ourselves (clear_providers, then CUDA or nothing: the CPU), so a provider entry in the
    # file matters only through its options, and those are where execution providers take code: QNN's
    # backend_path, TensorRT's plugin and engine-decryption libraries, OpenVINO's and VitisAI's config files. A
    # provider named with no options ({"cuda": {}}) stays allowed, so the CUDA provider we append finds no options
    # of the file's to take.
    for i, entry in enumerate(providers):
        if not isinstance(entry, dict):
            raise UserError(f"{path}: {where}.{PROVIDER_OPTIONS}[{i}] must be an object")
        for name, settings in entry.items():
            if settings != {}:
                _refuse(path, f"{where}.{PROVIDER_OPTIONS}[{i}].{name}", "execution-provider options")


def _refuse(path: Path, where: str, what: str) -> None:
    raise UserError(f"{path}: {where} sets {what}, which could make onnxruntime-genai load code; edgedistill loads "
                    f"models as data only, so it refuses this model. Remove {where} (edgedistill picks the execution "
                    f"provider, CPU or CUDA, and the session options itself), or run a model you trust with "
                    f"onnxruntime-genai itself")


def load_onnx(folder: Path, threads: int | None = None):
    """(og.Model, the genai config as a dict, the provider it runs on: "cuda" or "cpu"), with `threads` intra-op
    threads (default: all cores).

    The config is read and checked first (read_genai_config): onnxruntime-genai acts on what it reads while it
    builds the model, so a check after og.Model would come after a planted library had already run."""
    genai_config = read_genai_config(folder)
    try:
        import onnxruntime_genai as og
    except ImportError:
        raise UserError("ONNX models need onnxruntime-genai: pip install onnxruntime-genai") from None
    provider = device.onnx_provider()
    try:
        config = og.Config(str(folder))
        config.clear_providers()                        # no provider left: the CPU
        if provider == "cuda":                          # by name only: no options, so nothing from the file
            config.append_provider(provider)
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": threads or os.cpu_count(), "inter_op_num_threads": 1}}}}))
        return og.Model(config), genai_config, provider or "cpu"
    except (OSError, ValueError, RuntimeError) as exc:     # onnxruntime raises RuntimeError on a damaged file
        if provider == "cuda":
            raise UserError(f"{folder}: onnxruntime-genai's CUDA provider failed ({str(exc).strip()[:300]}); set "
                            f"EDGEDISTILL_DEVICE=cpu to run it on the CPU") from None
        raise UserError(f"{folder}: onnxruntime-genai cannot load this ONNX model ({str(exc).strip()[:300]}); "
                        f"it may be truncated: export it again") from None


class OnnxGenerator:
    backend = "onnx"

    def __init__(self, folder: str, threads: int | None = None):
        from transformers import AutoTokenizer
        self.folder = Path(folder)
        self.model, genai_config, self.provider = load_onnx(self.folder, threads)   # provider: "cuda" or "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=False, local_files_only=True)
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

    def complete(self, prompt: str, sampling: Sampling) -> str:
        """One completion of an already rendered prompt (the PromptCompleter llama.cpp and a server also are)."""
        ids = self.complete_ids(self.encode(prompt), sampling, torch.Generator().manual_seed(sampling.seed))
        return self.decode(ids).strip()

    def complete_ids(self, prompt_ids: list[int], sampling: Sampling, seed_generator=None) -> list[int]:
        """The completion's token ids, calculator fills included. `generate` passes one `seed_generator` to all
        its rows in turn, so a row's draws depend on the seed and its place in the call."""
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
