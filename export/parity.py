"""Does the exported file still behave like the model it came from? One parity report per artifact.

    agreement  greedy top-1 agreement, teacher-forced: the source (transformers, fp32) continues N evaluation
               prompts greedily (same chat template, 32 tokens); the artifact reads each prompt + continuation in
               one pass, and at every continuation position its own greedy choice is compared with the source's.
               Teacher forcing keeps one early flip from counting every later token as a miss
    kl         mean next-token KL(source || artifact) over the reference answers of other evaluation questions
               (held-out text the student should write), nats per token
    accuracy   pass@1 of source and artifact on the first `eval_limit` evaluation questions, greedy, calculator on
    template   the artifact renders and tokenises the chat prompt exactly as the source does (chat template, EOS)
    speed      file size, load seconds, prefill and decode tokens/s, peak memory (export/probe.py, a process each)

`parity.json` goes beside the artifact; the export stage prints the table and fails when agreement falls below
`min_agreement`, unless forced.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from edgedistill.device import choose, host, model_scope
from edgedistill.formats import answer_first_target, chat
from edgedistill.generation import load_generator, render_prompt
from edgedistill.records import write_json_atomic
from edgedistill.export.probe import measure_in_subprocess
from edgedistill.results import PASS_AT_1


class SourceModel:
    """The merged student in transformers, fp32 (on the GPU when there is one): the reference every artifact is
    compared with."""

    def __init__(self, merged: Path):
        from edgedistill.models import load_model
        self.model, self.tokenizer = load_model(str(merged), placement=choose("fp32"))
        self.model.eval()
        # every artifact is compared on the same prompts: the source's continuations are decoded once, not once per
        # artifact (token by token in fp32, they were most of a 0.5B export's parity time)
        self._continuations: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def prompt_ids(self, messages):
        return self.tokenizer.encode(render_prompt(self.tokenizer, messages), add_special_tokens=False)

    def greedy(self, ids: list[int], new_tokens: int) -> list[int]:
        key = (tuple(ids), new_tokens)
        if key not in self._continuations:
            self._continuations[key] = self._greedy(ids, new_tokens)
        return self._continuations[key]

    @torch.no_grad()
    def _greedy(self, ids: list[int], new_tokens: int) -> list[int]:
        with model_scope(self.model):
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.eos_token_id)
        return out[0, len(ids):].tolist()

    @torch.no_grad()
    def logprobs(self, ids: list[int]) -> np.ndarray:
        with model_scope(self.model):
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        return host(torch.log_softmax(logits, -1)).numpy()


class GgufScorer:
    def __init__(self, path: Path, threads: int = 2):
        import llama_cpp
        from edgedistill.generation import llama_chat_renderer
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.render = llama_chat_renderer(self.llm)

    def prompt_ids(self, messages):
        return self.llm.tokenize(self.render(messages).encode(), add_bos=False, special=True)

    def logprobs(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return _log_softmax(np.array(self.llm.scores[:len(ids)], dtype=np.float32))


class OnnxScorer:
    def __init__(self, path: Path, threads: int = 2):
        from edgedistill.generation.onnx import OnnxGenerator
        self.generator = OnnxGenerator(str(path), threads)

    def prompt_ids(self, messages):
        return self.generator.encode(self.generator.render(messages))

    def logprobs(self, ids: list[int]) -> np.ndarray:
        generator = self.generator.generator_for(ids, 1)
        return _log_softmax(np.array(generator.get_output("logits"), dtype=np.float32)[0, :len(ids)])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def scorer_for(kind: str, path: Path, threads: int = 2):
    return GgufScorer(path, threads) if kind == "gguf" else OnnxScorer(path, threads)


def compare(source: SourceModel, scorer, questions, n_prompts: int = 16, new_tokens: int = 32) -> dict:
    """Agreement, KL and template checks of one artifact against the source (see the module docstring)."""
    prompts = [chat(q) for q in questions[:n_prompts]]
    template_ok = all(scorer.prompt_ids(m) == source.prompt_ids(m) for m in prompts)
    agree = total = 0
    for messages in prompts:
        ids = source.prompt_ids(messages)
        continuation = source.greedy(ids, new_tokens)
        if not continuation:
            continue
        sequence = ids + continuation
        choices = scorer.logprobs(sequence)[len(ids) - 1:len(sequence) - 1].argmax(-1)
        agree += int((choices == np.array(continuation)).sum())
        total += len(continuation)
    kls, tokens = [], 0
    for q in questions[n_prompts:2 * n_prompts]:
        ids = source.prompt_ids(chat(q))
        target = source.tokenizer.encode(answer_first_target(q), add_special_tokens=False)
        sequence = ids + target
        p = source.logprobs(sequence)[len(ids) - 1:-1]
        r = scorer.logprobs(sequence)[len(ids) - 1:-1]
        kls.append(float((np.exp(p) * (p - r)).sum(-1).sum()))
        tokens += len(target)
    return {"template_ok": template_ok, "agreement": round(agree / max(total, 1), 4), "agreement_tokens": total,
            "kl": round(sum(kls) / max(tokens, 1), 5), "kl_tokens": tokens}


def accuracy(model, questions, backend: str = "auto", tables=None) -> float:
    """pass@1 of `model`: a path (loaded here) or a generator already loaded (the source's, not loaded twice);
    `tables`: the table tool its queries run on, for questions about the plant's tables."""
    from edgedistill.metrics import evaluate
    if not questions:
        return 0.0
    generator = load_generator(model, backend=backend) if isinstance(model, (str, Path)) else model
    return evaluate(generator, questions, k=1, batch_size=16, label=None, tables=tables).pass_at_1


def parity_report(kind: str, artifact: Path, source: SourceModel, questions, source_accuracy: float | None,
                  eval_limit: int = 64, n_prompts: int = 16, threads: int = 2, speed: bool = True,
                  tables=None) -> dict:
    """The whole report for one artifact; written to parity.json beside it (inside it, for an ONNX folder)."""
    report = {"artifact": str(artifact), "kind": kind,
              "bytes": artifact.stat().st_size if artifact.is_file()
              else sum(f.stat().st_size for f in artifact.iterdir() if f.is_file())}
    report.update(compare(source, scorer_for(kind, artifact, threads), questions, n_prompts))
    if eval_limit:
        report[PASS_AT_1] = accuracy(str(artifact), questions[:eval_limit], tables=tables)
        report["source_pass@1"] = source_accuracy
        report["eval_questions"] = min(eval_limit, len(questions))
    if speed:
        report.update({k: v for k, v in measure_in_subprocess(kind, str(artifact), threads, new_tokens=64,
                                                              repeats=1).items() if k != "kind"})
    write_json_atomic(parity_path(artifact), report)
    return report


def parity_path(artifact: Path) -> Path:
    return artifact / "parity.json" if artifact.is_dir() else artifact.with_name(artifact.name + ".parity.json")


def table(reports: dict[str, dict]) -> str:
    """Markdown table of parity reports, one row per artifact."""
    columns = [("agreement", "top-1 agreement", "{:.1%}"), ("kl", "KL nats/token", "{:.4f}"),
               (PASS_AT_1, PASS_AT_1, "{:.1%}"), ("source_pass@1", "source pass@1", "{:.1%}"),
               ("bytes", "MiB", None), ("load_seconds", "load s", "{}"), ("prefill_tokens_per_s", "prefill tok/s", "{}"),
               ("decode_tokens_per_s", "decode tok/s", "{}"), ("peak_memory_mb", "peak MB", "{}"),
               ("template_ok", "template", "{}")]
    lines = ["| artifact | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, report in reports.items():
        cells = []
        for key, _, fmt in columns:
            value = report.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("")
            elif key == "bytes":
                cells.append(f"{value / 2**20:.1f}")
            else:
                cells.append(fmt.format(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
