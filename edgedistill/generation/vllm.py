"""vLLM's offline engine as a generation backend, for GPU machines with `pip install vllm`.

    teacher:
      model: Qwen/Qwen2.5-7B-Instruct      # a local Hugging Face folder, or a hub id with allow_network: true
      backend: vllm

vLLM decodes on the GPU in its own loop, so the calculator works as it does for a server (continuation.py, "verify
and continue"): every round sends all open rows to one batched `LLM.generate`; a row whose arithmetic the
calculator corrects is cut after the `=`, gets the calculator's `value>>` and goes on in the next round. Each row
samples with its own seed (seed + index), so a rerun writes the same samples. Prompts are rendered with the
model's own chat template, through the same `render_prompt` the other backends use.

GGUF files stay on llama.cpp (`backend: llama.cpp`): vLLM's GGUF support is experimental and single-file only.
For a model that does not fit one process, run `vllm serve` (tensor parallel, several GPUs) and give its URL as
the teacher model: the OpenAI-compatible backend does the rest.
"""
from __future__ import annotations

from edgedistill import UserError
from edgedistill.generation.continuation import MAX_CONTINUATIONS, extend_with_calculator, finish
from edgedistill.generation.sampling import Sampling
from edgedistill.generation.templates import render_prompt


class VLLMGenerator:
    backend = "vllm"

    def __init__(self, llm, tokenizer):
        self.llm, self.tokenizer = llm, tokenizer
        self.generated_tokens = 0   # for the teacher's tokens/s

    def render(self, messages: list[dict]) -> str:
        return render_prompt(self.tokenizer, messages)

    def generate(self, conversations: list[list[dict]], sampling: Sampling, batch_size: int = 0,
                 progress: str | None = None) -> list[str]:
        """`batch_size` is ignored: vLLM schedules its own batches (continuous batching, paged KV cache)."""
        from vllm import SamplingParams
        prompts = [self.render(m) for m in conversations]
        texts, used = [""] * len(prompts), [0] * len(prompts)
        open_rows = list(range(len(prompts)))
        for _ in range(MAX_CONTINUATIONS):
            open_rows = [i for i in open_rows if used[i] < sampling.max_new_tokens]
            if not open_rows:
                break
            params = [SamplingParams(n=1, temperature=sampling.temperature,
                                     top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                                     max_tokens=sampling.max_new_tokens - used[i], seed=sampling.seed + i)
                      for i in open_rows]
            outputs = self.llm.generate([prompts[i] + texts[i] for i in open_rows], params,
                                        use_tqdm=progress is not None)
            still_open = []
            for i, output in zip(open_rows, outputs):
                completion = output.outputs[0]
                used[i] += len(completion.token_ids)
                self.generated_tokens += len(completion.token_ids)
                texts[i], finished = extend_with_calculator(texts[i], completion.text, sampling)
                if not finished:
                    still_open.append(i)
            open_rows = still_open
        return [finish(text, sampling) for text in texts]


def load_vllm_generator(spec: str, allow_network: bool = False, seed: int = 0, **engine_options) -> VLLMGenerator:
    """An engine for `spec` (local folder or hub id); `engine_options` go to `vllm.LLM` (gpu_memory_utilization,
    tensor_parallel_size, dtype, max_model_len ...)."""
    try:
        from vllm import LLM
    except ImportError:
        raise UserError("backend vllm needs vLLM, which runs on Linux with a CUDA GPU: pip install vllm. "
                        "Without a GPU use backend auto (transformers or llama.cpp), or point teacher.model at "
                        "any OpenAI-compatible server's URL") from None
    from edgedistill.models import resolve
    resolved = resolve(spec, allow_network)
    if resolved.kind == "gguf":
        raise UserError(f"{spec}: vLLM takes Hugging Face folders or hub ids; a GGUF file runs with backend "
                        f"llama.cpp (or auto)")
    llm = LLM(model=str(resolved.path), trust_remote_code=False, seed=seed, **engine_options)
    return VLLMGenerator(llm, llm.get_tokenizer())
