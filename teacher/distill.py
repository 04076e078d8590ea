"""Teacher stage: verified, scored, answer-first training data and preference pairs, resumable and traceable.

Two teachers, one config line apart (`teacher.kind`):
- `dataset` (the quickstart's default; DistillKit calls it a dataset teacher): the reference rationale that comes
  with each seed question, rewritten answer-first. Every calculator annotation is re-evaluated; a record whose
  arithmetic does not check out is kept in samples.jsonl with its verdict and left out of the SFT data.
- `model`: any model the resolver takes, or an OpenAI-compatible server, self-evolves the data (SPHERE,
  arXiv 2503.04813), in rounds that each append to samples.jsonl:
    1. sample    k answer-first completions per question (calculator on, two worked examples in the prompt);
                 each is verified against the reference, or, for a question without one, against the majority
                 of the k answers (every verdict says which: `reference_source` gold | majority, `agreement`)
    2. correct   questions whose k samples all fail get one reflect-and-retry round: the wrong answer is shown
                 back with "that is wrong, find the mistake", and k new samples are verified the same way
    3. negatives a weaker model (or the student) samples at high temperature; its wrong answers are the
                 rejected side of preference pairs
  Every sample's steps are scored (teacher/steps.py) and every sample carries its provenance: teacher model,
  backend, sampling parameters, seed, prompt hash.

Then the views (written afresh from samples.jsonl every time, so a rerun after a kill rebuilds them whole):
    sft/train.jsonl               selected verified samples, answer-first, with difficulty (1 - pass rate)
    sft/rationale_first.jsonl     the same content rationale-first (the baseline answer-first is compared with)
    preferences/train.jsonl       chosen/rejected pairs (teacher/pairs.py)
    dataset/                      all three as a Hugging Face datasets folder with a card (teacher/publish.py)
    selection.json, selection.png what selection kept and dropped, and why (teacher/select.py)
    summary.json                  counts and yields

Resume: samples are appended per chunk of questions; a rerun regenerates only chunks with missing ids. Chunks
are cut from the full question list and seeded by their index, so a resumed run writes exactly the records the
uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import NamedTuple


from edgedistill.calculator import check_annotations
from edgedistill.checkers import extract_answer, is_correct, majority
from edgedistill.config import Config
from edgedistill.formats import INSTRUCTION_RATIONALE_FIRST, answer_first_from_reasoning, answer_first_target, chat, \
    rationale_first, reasoning_of, split_answer_reason
from edgedistill.generation import load_generator
from edgedistill.rundir import TeacherFiles
from edgedistill.teacher.clock import RoundClock, chunk_seed, unfinished_chunks
from edgedistill.records import AppendLog, Question, Sample, as_samples, by_question, load_questions, load_sources, to_dict, \
    write_json_atomic, write_jsonl_atomic

FEW_SHOT = 2   # worked examples in a model teacher's prompt, taken from the first train questions with rationales
CORRECTION = "That answer ({answer}) is wrong. Find the mistake, then solve the question again in the same format."


def run_teacher(config: Config, out: Path, load=load_generator) -> dict:
    """`load`: how a model spec becomes a generator (load_generator's signature; tests pass stand-ins)."""
    cfg = config.teacher
    load = loaded_once(load)   # the rationale, evolve and sampling rounds often name the same teacher
    questions = load_sources(config.data.sources(), need_answers=cfg.kind == "dataset", columns=config.data.columns)
    files = TeacherFiles(out)
    if config.knowledge.tables:   # table questions see their tables' schema (and a share of the others see some)
        questions = table_context(config, questions, files, load)
    log = AppendLog(files.samples, key="id")
    scorer = make_scorer(config, load)
    judge = None
    if cfg.judge_model and any(q.answer_type == "text" for q in questions):   # free-text answers need a judge
        from edgedistill.checkers import Judge
        judge = Judge(load(cfg.judge_model, config.allow_network, template=cfg.template))
    shots = [(q, answer_first_target(q)) for q in questions if q.rationale][:FEW_SHOT]
    # A model teacher reasons first, then answers; write_views rewrites its verified samples answer-first.
    reasoning_shots = [(q, rationale_first(target)) for q, target in shots]
    teacher_chat = lambda q: chat(q, reasoning_shots, instruction=INSTRUCTION_RATIONALE_FIRST)   # noqa: E731
    if cfg.rationalize.enabled:   # labelled seeds get the teacher's checked explanations as their rationales
        questions = rationalize_round(config, questions, files, load)
    # New questions first; they come with the teacher's verified rationale, so they are written like a dataset's.
    evolved = evolve_round(config, questions, files, load) if cfg.evolve.enabled() else []
    done = log.done()
    log.append(to_dict(dataset_sample(q, scorer)) for q in (questions if cfg.kind == "dataset" else []) + evolved
               if f"{q.id}#0" not in done)
    if cfg.kind == "model":
        teacher = load(cfg.model, config.allow_network, sampling_backend(cfg.model, cfg.backend),
                       template=cfg.template)
        first = lambda q: [teacher_chat(q)] * cfg.samples   # noqa: E731
        sample_round(config, "sample", teacher, cfg.model, questions, first, cfg.temperature, log, scorer, judge)
        if cfg.self_correct:
            failed = failed_questions(questions, log.rows(), cfg.samples)
            retry = lambda q: [teacher_chat(q) + [{"role": "assistant", "content": s.text},   # noqa: E731
                                                 {"role": "user", "content": CORRECTION.format(
                                                     answer=s.verdict.get("predicted") or "none given")}]
                               for s in failed[q.id]]
            sample_round(config, "correct", teacher, cfg.model, [q for q in questions if q.id in failed], retry,
                         cfg.temperature, log, scorer, judge)
    if cfg.negatives_model:   # either kind: the student's own wrong answers make the best rejected sides
        weak = load(cfg.negatives_model, config.allow_network,
                    sampling_backend(cfg.negatives_model, cfg.backend), template=cfg.template)
        negatives = lambda q: [chat(q, [] if cfg.negatives_zero_shot else shots)] * cfg.negatives_samples  # noqa: E731
        sample_round(config, "negative", weak, cfg.negatives_model, questions, negatives,
                     cfg.negatives_temperature, log, scorer, judge)
    return write_views(config, questions + evolved, log.rows(), out)


def loaded_once(load):
    """`load` that loads each (model, options) once per run and hands back the same generator after."""
    loaded = {}

    def load_cached(spec, *args, **kwargs):
        key = (spec, args, tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = load(spec, *args, **kwargs)
        return loaded[key]
    return load_cached


def evolve_round(config: Config, seeds: list[Question], files: TeacherFiles, load) -> list[Question]:
    """The self-generation round (teacher/evolve.py), then its views: the kept questions, in the seed schema."""
    from edgedistill.teacher.evolve import run_evolve
    from edgedistill.teacher.evolve_views import write_evolve_views
    model = config.teacher.evolve.model or config.teacher.model
    teacher = load(model, config.allow_network, sampling_backend(model, config.teacher.backend),
                   template=config.teacher.template)
    # numbers, and work-order lines (labels of a closed set): the kinds a new question can be verified for
    answered = [q for q in seeds if q.answer is not None and (q.answer_type == "number" or
                                                             (q.answer_type == "label" and q.options))]
    run_evolve(config, answered, files.evolve, teacher, model)
    return write_evolve_views(config, answered, files.evolve)


def rationalize_round(config: Config, questions: list[Question], files: TeacherFiles, load) -> list[Question]:
    """Explanations for the labelled seeds (teacher/rationalize.py); the seeds back, with the kept ones."""
    from edgedistill.teacher.rationalize import eligible, run_rationalize, write_rationalize_views
    cfg = config.teacher.rationalize
    if eligible(questions, cfg):
        model = cfg.model or config.teacher.model
        teacher = load(model, config.allow_network, sampling_backend(model, config.teacher.backend),
                       template=config.teacher.template)
        run_rationalize(config, questions, files.rationalize, teacher, model)
    return write_rationalize_views(questions, files.rationalize)


SMALL_GGUF_BYTES = 512 * 2**20


def sampling_backend(spec: str, backend: str = "auto") -> str:
    """The backend a teacher samples with. `auto`: a small GGUF (under 512 MiB, a few hundred million parameters)
    samples on transformers, dequantised to fp32 once: many rows per batch with each repeated prompt prefilled
    once wrote 148 tok/s against llama.cpp's 100 on 2 cores (SmolLM2-135M, benchmarks/teacher_throughput.py).
    Larger GGUFs stay on llama.cpp, whose quantized weights need an eighth of fp32's memory."""
    if backend != "auto" or str(spec).startswith(("http://", "https://")):
        return backend
    from edgedistill.models import resolve
    resolved = resolve(spec)
    small = resolved.kind == "gguf" and resolved.path.stat().st_size < SMALL_GGUF_BYTES
    return "transformers" if small else "auto"


def make_scorer(config: Config, load=load_generator):
    from edgedistill.teacher.steps import GroundingScorer, JudgeScorer, NoScorer
    if config.teacher.step_scorer == "judge":
        return JudgeScorer(load(config.teacher.judge_model, config.allow_network,
                                template=config.teacher.template))
    return GroundingScorer() if config.teacher.step_scorer == "grounding" else NoScorer()


def table_context(config: Config, questions: list[Question], files: TeacherFiles, load) -> list[Question]:
    """The questions, and those the teacher writes about knowledge.tables (by rule, then by the model teacher),
    each with the schema of its tables as its context."""
    from edgedistill.tables import open_tables, with_context
    from edgedistill.teacher.table_questions import rule_questions
    cfg = config.teacher.tables
    tool = open_tables([*config.knowledge.tables, *config.knowledge.practice_tables])
    try:
        written = []
        if cfg.rule_questions:
            names = rule_tables(tool, config.knowledge.tables)
            rule = rule_questions(tool, seed=config.seed, count=cfg.rule_questions, wordings=tuple(cfg.wordings),
                                  source="teacher.tables: rule", tables=names)
            for q in rule:
                q.id = f"tables-{q.id}"
            write_jsonl_atomic(files.tables.rule, [to_dict(q) for q in rule])
            print(f"[teach] {len(rule)} questions written by rule from {len(names)} table{'s' if len(names) != 1 else ''} "
                  f"({files.tables.rule})", flush=True)
            written += rule
        if cfg.enabled():
            from edgedistill.teacher.table_teacher import run_table_teacher
            name = cfg.model or config.teacher.model
            teacher = load(name, config.allow_network, sampling_backend(name, config.teacher.backend),
                           template=config.teacher.template)
            kept = run_table_teacher(cfg, tool, written, files.tables, teacher, name, seed=config.seed,
                                     progress="teacher tables")
            write_jsonl_atomic(files.tables.kept, [to_dict(q) for q in kept])
            print(f"[teach] {len(kept)} questions the teacher wrote about the tables kept ({files.tables.kept})",
                  flush=True)
            written += kept
        from edgedistill.table_values import ValueIndex
        values = ValueIndex(tool, names=config.knowledge.name_hints) if config.knowledge.value_hints else None
        return with_context(questions + written, tool, seed=config.seed, other_tables=config.knowledge.other_tables,
                            mixed_share=config.knowledge.mixed_share, values=values)
    finally:
        tool.close()


def rule_tables(tool, paths: list[str]) -> list[str]:
    """The tables of the open `tool` that rule questions are written about: the plant's own (knowledge.tables
    `paths`, never the practice tables), less the shipped plant, which has its own verified splits, when a plant's
    own files are named beside it. Told apart by the file each table was read from (an Excel sheet: `file [sheet]`)."""
    from edgedistill.tables import PACKAGED_TABLES, table_files
    own = {str(path) for path in table_files([p for p in paths if str(p) not in PACKAGED_TABLES] or paths)}
    return [t.name for t in tool.tables if t.source.rsplit(" [", 1)[0] in own or t.source in own]


def dataset_sample(q: Question, scorer) -> Sample:
    """The reference rationale, answer-first, with its arithmetic re-checked by the calculator. A row with a gold
    answer but no rationale (a work-order label, an option letter, a spreadsheet of question and answer) becomes a
    label-only target, the Answer line alone: trained on, not dropped."""
    text = answer_first_target(q)
    problems = check_annotations(text)
    predicted = extract_answer(text, q.answer_type)
    how = "reference answer + calculator check" if q.rationale else "reference answer, label only (no rationale)"
    verdict = {"correct": is_correct(predicted, q) and not problems, "how": how,
               "reference": q.answer, "reference_source": "gold", "problems": problems}
    sample = _sample(q, "dataset", {}, "0", text, verdict, "teacher")
    sample.scores = scorer.score(q, [text])[0] if q.rationale else {}
    return sample


class Round(NamedTuple):
    id_prefix: str       # sample ids: "<question>#<prefix><k>"
    origin: str          # what the sample's record says it is
    format: str          # how the round's prompt asks for the text: the teacher reasons first, a student answers first


ROUNDS = {"sample": Round("", "teacher", "rationale-first"),          # seeds: clock.SEED_OFFSETS, by round name
          "correct": Round("c", "self-correction", "rationale-first"),
          "negative": Round("n", "negative", "answer-first")}


def sample_round(config: Config, name: str, generator, model: str, questions: list[Question], conversations_for,
                 temperature: float, log: AppendLog, scorer, judge=None) -> None:
    """Sample the conversations of each question, verify, score, append; chunks already written are skipped, and
    a resumed chunk keeps its seed (teacher/clock.py, as the evolve and rationalize rounds)."""
    from edgedistill.generation import Sampling
    cfg = config.teacher
    written_rows = log.rows()
    done = {row["id"] for row in written_rows}
    references = first_round_references(written_rows) if name != "sample" else {}
    asked = [(q, conversations_for(q)) for q in questions]
    todo = unfinished_chunks(asked, cfg.batch_size,
                             lambda item: any(_id(item[0], name, k) not in done for k in range(len(item[1]))))
    if not todo:
        return
    written_here = sum(_id(q, name, k) in done for q, per_q in asked for k in range(len(per_q)))
    if written_here:
        print(f"teacher: resuming the {name} round, {written_here} samples already written, "
              f"{sum(len(chunk) for _, chunk in todo)} questions to go", flush=True)
    clock = RoundClock(log.path.with_name(f"{log.path.stem}.{name}.progress.json"), generator, chunks=todo,
                       desc=f"teacher {name}", unit="q")
    for index, chunk in todo:
        seed = chunk_seed(config.seed, name, index)
        sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=temperature, stop_after_answer=False,
                            seed=seed)
        texts = iter(generator.generate([c for _, per_q in chunk for c in per_q], sampling,
                                        batch_size=sum(len(per_q) for _, per_q in chunk)))
        meta = {"backend": generator.backend, "temperature": temperature, "top_p": 1.0,
                "max_new_tokens": cfg.max_new_tokens, "seed": seed, "round": name}
        rows = []
        for q, per_q in chunk:
            outputs = [next(texts) for _ in per_q]
            predictions = [extract_answer(t, q.answer_type) for t in outputs]
            reference = references.get(q.id) or reference_for(q, predictions)
            scores = scorer.score(q, outputs)
            for k, (conversation, text, predicted, score) in enumerate(zip(per_q, outputs, predictions, scores)):
                if _id(q, name, k) in done:
                    continue
                problems = check_annotations(text)
                verdict = {"correct": _verified(predicted, q, reference, judge) and not problems,
                           "predicted": predicted, **reference, "how": "reference + calculator check",
                           "problems": problems}
                provenance = {**meta, "prompt_sha256": _prompt_hash(conversation)}
                sample = _sample(q, model, provenance, f"{ROUNDS[name].id_prefix}{k}", text, verdict,
                                 ROUNDS[name].origin, ROUNDS[name].format)
                sample.scores = score
                rows.append(to_dict(sample))
        log.append(rows)
        clock.tick(len(chunk))
    clock.close()


def reference_for(q: Question, predictions: list[str | None]) -> dict:
    """The question's own answer when it has one, else the majority of the k answers with its agreement."""
    if q.answer is not None:
        return {"reference": q.answer, "reference_source": "gold"}
    answer, agreement = majority(predictions, q)
    return {"reference": answer, "reference_source": "majority", "agreement": agreement}


def _verified(predicted: str | None, q: Question, reference: dict, judge=None) -> bool:
    if reference["reference"] is None:
        return False
    return is_correct(predicted, Question(**{**q.__dict__, "answer": reference["reference"]}), judge)


def first_round_references(samples: list) -> dict[str, dict]:
    """Per question, the reference its first round was verified against (later rounds use the same)."""
    found = {}
    for s in as_samples(samples):
        if s.origin == "teacher" and s.question_id not in found:
            found[s.question_id] = {key: s.verdict[key] for key in ("reference", "reference_source", "agreement")
                                    if key in s.verdict}
    return found


def failed_questions(questions: list[Question], samples: list, k: int) -> dict[str, list[Sample]]:
    """Questions with a reference answer whose first-round samples all failed: {id: those samples}."""
    first = by_question(s for s in as_samples(samples) if s.origin == "teacher")
    return {q.id: first[q.id] for q in questions
            if q.answer is not None and len(first.get(q.id, [])) >= k
            and not any(s.verdict.get("correct") for s in first[q.id])}


def _id(q: Question, name: str, k: int) -> str:
    return f"{q.id}#{ROUNDS[name].id_prefix}{k}"


def _prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def _sample(q: Question, model: str, meta: dict, k: str, text: str, verdict: dict, origin: str,
            text_format: str = "answer-first") -> Sample:
    answer, rationale = split_answer_reason(text)
    if text_format == "rationale-first":
        rationale = reasoning_of(text)
    return Sample(id=f"{q.id}#{k}", question_id=q.id, teacher={"model": model, **meta, "sample": k}, text=text,
                  answer=answer, rationale=rationale, verdict=verdict, calculator_ok=not verdict.get("problems"),
                  origin=origin, format=text_format)


def for_the_student(questions: list[Question], samples: list[Sample]) -> tuple[list[Sample], int]:
    """The samples as the student sees them: a reasoning-first sample rewritten answer-first, its Answer line one
    expression over the question's numbers (formats.answer_first_from_reasoning; the log keeps what the teacher
    wrote). A verified sample that cannot be rewritten is dropped and counted; an unverified one is rewritten to its
    own answer (as a bare Answer line when its annotations do not lead there), to serve as a rejected side."""
    by_id = {q.id: q for q in questions}
    out, dropped = [], 0
    for s in samples:
        q = by_id.get(s.question_id)
        if s.format != "rationale-first" or q is None:
            out.append(s)
            continue
        correct = bool(s.verdict.get("correct"))
        target = s.verdict.get("reference") if correct else s.verdict.get("predicted")
        text = answer_first_from_reasoning(s.text, q, str(target)) if target is not None else None
        if text is None and not correct and target is not None:   # a rejected side needs no expression
            reason = reasoning_of(s.text)
            text = f"Answer: {target}\nReason: {reason}" if reason else f"Answer: {target}"
        if text is None:
            dropped += correct
            continue
        out.append(dataclasses.replace(s, text=text, format="answer-first"))
    return out, dropped


def write_views(config: Config, questions: list[Question], samples: list, out: Path) -> dict:
    """SFT (both formats), preference pairs, selection and the datasets folder, from the whole sample log (its
    records, read back as Samples)."""
    from edgedistill.teacher.pairs import build_pairs
    from edgedistill.teacher.publish import write_dataset
    from edgedistill.teacher.select import select, write_selection_report
    cfg = config.teacher
    samples, not_rewritten = for_the_student(questions, as_samples(samples))
    groups = by_question(samples)
    candidates = []
    for order, q in enumerate(questions):
        group = groups.get(q.id, [])
        first = [s for s in group if s.origin == "teacher"]
        pass_rate = sum(bool(s.verdict.get("correct")) for s in first) / max(1, len(first))
        verified = [s for s in group if s.verdict.get("correct") and s.origin != "negative"]
        verified.sort(key=lambda s: (-s.scores.get("min", 0.0), s.id))
        if not verified:   # counted in the selection report's "not verified"
            candidates.append({"id": q.id, "order": order, "q": q, "question": q.question, "text": "",
                               "rationale": "", "pass_rate": 0.0, "tokens": 0, "verified": False})
        for s in verified[:cfg.keep_per_question]:
            candidates.append({"id": s.id, "order": order, "q": q, "question": q.question, "text": s.text,
                               "rationale": s.rationale or "", "pass_rate": round(pass_rate, 4),
                               "tokens": max(1, len(s.text) // 4),
                               "answer": s.verdict.get("reference", q.answer)})
    eval_files = ([config.data.eval] if cfg.select.decontaminate_eval else []) + cfg.select.decontaminate
    eval_texts = [e.question for path in eval_files for e in load_questions(path, need_answers=False)]
    embedder = None
    if cfg.select.budget is not None or cfg.select.budget_tokens is not None:
        from edgedistill.models import embedder_folder
        embedder = embedder_folder(cfg.select.embedder, config.allow_network)
    kept, selection = select(candidates, cfg.select, eval_texts, config.seed, embedder)
    sft = [{"id": c["id"], "prompt": chat(c["q"]), "completion": [{"role": "assistant", "content": c["text"]}],
            "pass_rate": c["pass_rate"], "difficulty": c["difficulty"], "answer": c["answer"],
            "answer_type": c["q"].answer_type, "options": c["q"].options,
            **({"weight": c["q"].weight} if c["q"].weight != 1.0 else {})} for c in kept]
    sft_rf = [{**row, "prompt": chat(c["q"], instruction=INSTRUCTION_RATIONALE_FIRST),
               "completion": [{"role": "assistant", "content": rationale_first(c["text"])}]}
              for row, c in zip(sft, kept)]
    pairs, pair_report = build_pairs(questions, samples, cfg.pair_margin, cfg.pair_length_ratio)
    files = TeacherFiles(out)
    write_jsonl_atomic(files.sft_answer_first, sft)
    write_jsonl_atomic(files.sft_rationale_first, sft_rf)
    write_jsonl_atomic(files.preferences, pairs)
    write_selection_report(selection, out)
    firsts = first_round_references(samples)
    summary = {"questions": len(questions), "samples": len(samples),
               "verified": sum(1 for s in samples if s.verdict.get("correct")),
               "questions_with_verified": len({c["q"].id for c in candidates if c.get("verified", True)}), "kept": len(sft),
               "references": {source: sum(r.get("reference_source") == source for r in firsts.values())
                              for source in ("gold", "majority")},
               "self_corrected": len({s.question_id for s in samples
                                      if s.origin == "self-correction" and s.verdict.get("correct")}),
               "negatives": sum(s.origin == "negative" for s in samples),
               "verified_not_rewritten_answer_first": not_rewritten,
               "pairs": pair_report, "selection": {k: selection[k] for k in ("candidates", "kept", "dropped")}}
    sources = {"questions": [f"{s.source} (weight {s.weight:g})" for s in config.data.sources()], "kind": cfg.kind, "teacher": cfg.model or "reference rationales",
               "samples": cfg.samples if cfg.kind == "model" else 1, "temperature": cfg.temperature,
               "negatives": cfg.negatives_model, "step_scorer": cfg.step_scorer, "seed": config.seed}
    write_dataset(files.dataset, {"sft": sft, "sft_rationale_first": sft_rf, "preferences": pairs}, summary, sources)
    write_json_atomic(out / "summary.json", summary)
    return {k: summary[k] for k in ("questions", "samples", "verified", "questions_with_verified", "kept")} | \
        {"pairs": pair_report["pairs"]}
