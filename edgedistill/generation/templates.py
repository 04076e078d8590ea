"""Chat templates: a conversation (a list of {"role", "content"} messages) -> the prompt text a model continues.

Every backend renders through here, so a model gets the same prompt whatever runs it: transformers and ONNX with
the tokenizer's template, llama.cpp with the template stored in the GGUF, a server with the template of a local
model named for it. No backend is imported; llama_cpp and transformers only inside the functions that need them.
"""
from __future__ import annotations

from typing import Callable

from edgedistill import UserError

ChatRenderer = Callable[[list[dict]], str]


def plain_prompt(messages: list[dict]) -> str:
    """The prompt of a model without a chat template: the messages' texts, a blank line after each."""
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The model's own chat template, with the assistant turn opened; plain text for models without one."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(messages)


def llama_chat_renderer(llm) -> ChatRenderer:
    """messages -> prompt, with the chat template stored in the GGUF a `llama_cpp.Llama` has loaded (plain text
    when it has none): the rendering transformers applies to the same template."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return plain_prompt
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    tokens = llm._model.token_get_text
    formatter = Jinja2ChatFormatter(template, eos_token=tokens(llm.token_eos()), bos_token=tokens(llm.token_bos()))
    return lambda messages: formatter(messages=messages).prompt


def gguf_chat_renderer(gguf_path: str) -> ChatRenderer:
    """The chat template of a GGUF without loading its weights (vocabulary only)."""
    import llama_cpp
    try:
        llm = llama_cpp.Llama(model_path=gguf_path, vocab_only=True, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{gguf_path}: llama.cpp cannot read this GGUF ({exc})") from None
    return llama_chat_renderer(llm)


def chat_renderer(spec: str, allow_network: bool = False) -> ChatRenderer:
    """messages -> prompt text with the chat template of the model `spec` names (no weights loaded)."""
    from edgedistill.models import resolve
    resolved = resolve(spec, allow_network)
    if resolved.kind == "gguf":
        return gguf_chat_renderer(str(resolved.path))
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(resolved.hf_folder(), trust_remote_code=False, local_files_only=True)
    return lambda messages: render_prompt(tokenizer, messages)
