"""Generation with the calculator, on every backend edgedistill runs: `load_generator(spec)` picks one.

    sampling.py      Sampling, Token, ANSWER_LINE_DONE: what a completion is asked for (no torch)
    protocols.py     Backend, SingleRowDecoder, PromptCompleter, Scorer: what callers may rely on
    templates.py     chat templates: render_prompt, llama_chat_renderer, gguf_chat_renderer, chat_renderer
    base.py          Row (the calculator and the answer stop, per row), shared_prefix, encode_completion (no torch)
    decoding.py      choose_tokens, stream_row, stream_completion (torch)
    continuation.py  verify and continue: the calculator for engines that decode in their own loop
    transformers.py  TransformersGenerator         llamacpp.py  LlamaCppGenerator     onnx.py  OnnxGenerator
    openai_api.py    OpenAIGenerator (a server)    vllm.py      VLLMGenerator (GPU)

The shared modules import no backend and no backend imports another; only `load_generator` imports backends, when
it is called. This package re-exports the torch-free names, so `from edgedistill.generation import Sampling` costs
no torch import; the decoding loops and the backends are imported from their own modules.
"""
from __future__ import annotations

from edgedistill.generation.base import MIN_SHARED_PREFIX, Row, encode_completion, encode_with_calculator_flags, \
    shared_prefix
from edgedistill.generation.protocols import Backend, PromptCompleter, Scorer, SingleRowDecoder
from edgedistill.generation.sampling import ANSWER_LINE_DONE, Sampling, Token
from edgedistill.generation.templates import ChatRenderer, chat_renderer, gguf_chat_renderer, llama_chat_renderer, \
    plain_prompt, render_prompt

__all__ = ["ANSWER_LINE_DONE", "Backend", "ChatRenderer", "MIN_SHARED_PREFIX", "PromptCompleter", "Row", "Sampling",
           "Scorer", "SingleRowDecoder", "Token", "chat_renderer", "encode_completion",
           "encode_with_calculator_flags", "gguf_chat_renderer", "llama_chat_renderer", "load_generator",
           "plain_prompt", "render_prompt", "shared_prefix"]


def load_generator(spec: str, allow_network: bool = False, backend: str = "auto", template: str | None = None,
                   threads: int | None = None) -> Backend:
    """A generator for anything the resolver takes, or for an OpenAI-compatible server's URL.

    backend "auto": an http(s):// URL goes to that server (`template`: whose chat template renders the prompts);
    a GGUF file runs on llama.cpp when llama-cpp-python is installed, everything else (and a GGUF without
    llama.cpp, after dequantising) on transformers; a folder with genai_config.json (an ONNX export) on
    onnxruntime-genai. "transformers", "llama.cpp", "onnx" or "vllm" (GPU) force one. `threads`: CPU threads for
    llama.cpp and ONNX (default all cores; on a machine busy with other work, fewer decode much faster).
    llama.cpp and ONNX go to the GPU by themselves when their builds have one (device.gpu_layers(),
    device.onnx_provider()); EDGEDISTILL_DEVICE=cpu keeps them on the CPU.

    Backends are imported here, inside the call, and nowhere else in this package: each pulls in its own runtime
    (torch, llama_cpp, onnxruntime_genai, vllm), and none may depend on another.
    """
    from edgedistill.models import load_model, resolve
    if str(spec).startswith(("http://", "https://")):
        from edgedistill.generation.openai_api import load_openai_generator
        return load_openai_generator(str(spec), template, allow_network)
    if backend == "vllm":
        from edgedistill.generation.vllm import load_vllm_generator
        return load_vllm_generator(spec, allow_network)
    from edgedistill.generation.onnx import OnnxGenerator, is_onnx_folder
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
            from edgedistill.generation.llamacpp import LlamaCppGenerator
            return LlamaCppGenerator(str(resolved.path), threads=threads)
    model, tokenizer = load_model(spec, allow_network)
    from edgedistill.generation.transformers import TransformersGenerator
    return TransformersGenerator(model, tokenizer)
