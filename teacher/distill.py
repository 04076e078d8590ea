"""Teacher stage: write answer-first training data, verified, resumable.

Two teachers, one config line apart (`teacher.kind`):
- `dataset` (the quickstart's default; DistillKit calls it a dataset teacher): the reference rationale that comes
  with each seed question, rewritten answer-first. Every calculator annotation is re-evaluated; a record whose
  arithmetic does not check out is kept in samples.jsonl with its verdict and left out of the SFT data.
- `model`: any model the resolver takes samples `teacher.samples` answer-first completions per question (with the
  calculator, two worked examples in the prompt) and each is verified against the reference answer.

Outputs, in `<run>/teacher/`:
    samples.jsonl      every sample with its verdict (append-only; a rerun regenerates no finished record)
    sft/train.jsonl    the verified samples as {"prompt": [messages], "completion": [messages]} (TRL's format)
    summary.json       counts: questions, samples, verified, kept
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from edgedistill.calculator import check_annotations
from edgedistill.config import Config
from edgedistill.formats import answer_first_target, chat, extract_answer, is_correct, split_answer_reason
from edgedistill.records import AppendLog, Question, Sample, load_questions, to_dict, write_json_atomic, \
    write_jsonl_atomic

FEW_SHOT = 2   # worked examples in a model teacher's prompt, taken from the first train questions


def run_teacher(config: Config, out: Path) -> dict:
    questions = load_questions(config.data.train, limit=config.data.train_limit)
    log = AppendLog(out / "samples.jsonl", key="id")
    done = log.done()
    todo = [q for q in questions if not all(f"{q.id}#{k}" in done for k in range(_samples_per_question(config)))]
    if done:
        print(f"teacher: resuming, {len(done)} samples already written, {len(todo)} questions to go", flush=True)
    if config.teacher.kind == "dataset":
        log.append(to_dict(dataset_sample(q)) for q in todo)
    else:
        model_teacher(config, questions, todo, log)
    return write_sft_view(questions, log.rows(), config.teacher.keep_per_question, out)


def _samples_per_question(config: Config) -> int:
    return 1 if config.teacher.kind == "dataset" else config.teacher.samples


def dataset_sample(q: Question) -> Sample:
    """The reference rationale, answer-first, with its arithmetic re-checked by the calculator."""
    if not q.rationale:
        return _sample(q, "dataset", {}, 0, "", verdict={"correct": False, "how": "no reference rationale"})
    text = answer_first_target(q)
    problems = check_annotations(text)
    predicted = extract_answer(text, q.answer_type)
    correct = is_correct(predicted, q) and not problems
    verdict = {"correct": correct, "how": "reference answer + calculator check", "reference": q.answer,
               "problems": problems}
    return _sample(q, "dataset", {}, 0, text, verdict=verdict, calculator_ok=not problems)


def model_teacher(config: Config, questions: list[Question], todo: list[Question], log: AppendLog) -> None:
    from edgedistill.generate import Sampling, load_generator
    cfg = config.teacher
    generator = load_generator(cfg.model, config.allow_network, template=cfg.template)
    shots = [(q, answer_first_target(q)) for q in questions[:FEW_SHOT] if q.rationale]
    meta = {"backend": generator.backend, "temperature": cfg.temperature, "top_p": 1.0,
            "max_new_tokens": cfg.max_new_tokens}
    chunk = max(1, cfg.batch_size)   # questions per append: a kill loses at most this many questions' samples
    started, total = time.time(), len(todo)
    for start in range(0, total, chunk):
        batch = todo[start:start + chunk]
        conversations = [chat(q, shots) for q in batch for _ in range(cfg.samples)]
        seed = config.seed + start
        sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            stop_after_answer=False, seed=seed)
        texts = generator.generate(conversations, sampling, batch_size=cfg.batch_size * cfg.samples)
        rows = []
        for i, q in enumerate(batch):
            for k in range(cfg.samples):
                text = texts[i * cfg.samples + k]
                predicted = extract_answer(text, q.answer_type)
                problems = check_annotations(text)
                verdict = {"correct": is_correct(predicted, q) and not problems, "predicted": predicted,
                           "reference": q.answer, "how": "reference answer + calculator check",
                           "problems": problems}
                provenance = {**meta, "seed": seed, "prompt_sha256": _prompt_hash(conversations[i * cfg.samples])}
                rows.append(to_dict(_sample(q, cfg.model, provenance, k, text, verdict, calculator_ok=not problems)))
        log.append(rows)
        done = start + len(batch)
        rate = done / (time.time() - started)
        print(f"teacher: {done}/{total} questions, {rate:.2f} q/s", flush=True)


def _prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def _sample(q: Question, model: str, meta: dict, k: int, text: str, verdict: dict, calculator_ok=True) -> Sample:
    answer, rationale = split_answer_reason(text)
    return Sample(id=f"{q.id}#{k}", question_id=q.id, teacher={"model": model, **meta, "sample": k}, text=text,
                  answer=answer, rationale=rationale, verdict=verdict, calculator_ok=calculator_ok)


def write_sft_view(questions: list[Question], samples: list[dict], keep: int, out: Path) -> dict:
    """The verified samples as prompt/completion chat records, at most `keep` per question, in question order."""
    by_question: dict[str, list[dict]] = {}
    for s in samples:
        if s["verdict"].get("correct"):
            by_question.setdefault(s["question_id"], []).append(s)
    rows = []
    for q in questions:
        for s in by_question.get(q.id, [])[:keep]:
            rows.append({"id": s["id"], "prompt": chat(q), "completion": [{"role": "assistant", "content": s["text"]}]})
    write_jsonl_atomic(out / "sft" / "train.jsonl", rows)
    summary = {"questions": len(questions), "samples": len(samples),
               "verified": sum(1 for s in samples if s["verdict"].get("correct")),
               "questions_with_verified": len(by_question), "kept": len(rows)}
    write_json_atomic(out / "summary.json", summary)
    return summary
