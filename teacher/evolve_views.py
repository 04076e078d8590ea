"""The self-generation round's views, rebuilt whole from its two logs every time (so a rerun after a kill, or with
other thresholds, needs no teacher call):

    1. verify     a proposal with all its solves is kept when the majority answer has at least `min_agreement`
                  of the votes and equals the reference: the seed's answer for a rewording, the calculator's value
                  of the teacher's expression for a variation or composition
    2. rewrite    a verified solve becomes the student's answer-first target: its annotations are inlined into one
                  expression over the question's numbers (expressions.inline_annotations); a rewording whose solves
                  cannot be inlined takes its seed's expression when the rewording shows all its numbers; the rest
                  are dropped and counted
    3. clean      a question sharing an `ngram`-word run with a dev or held-out question is dropped (the seed
                  generator's own check), and one whose embedding is within `duplicate_similarity` of a seed or an
                  earlier kept question
    4. multiply   a kept question whose numbers are slots becomes `instances` more, new numbers drawn and the answer,
                  expression and reasoning recomputed by the calculator: one teacher call, many verified questions

kept.jsonl holds the records in the seed schema with their provenance; rejected.jsonl every rejected proposal
with its reason; summary.json the counts by kind; README.md the card.
"""
from __future__ import annotations

import difflib
import json
import random
import re
import zlib
from collections import Counter

import numpy as np

from edgedistill.calculator import check_annotations, numbers_match
from edgedistill.checkers import is_correct, majority, word_runs
from edgedistill.datasets import work_order_text
from edgedistill.config import Config
from edgedistill.expressions import Template, inline_annotations, over_question_numbers, substitute
from edgedistill.formats import reasoning_of
from edgedistill.records import AppendLog, Question, by_question, load_questions, read_json_object, \
    write_json_atomic, write_jsonl_atomic, write_text_atomic
from edgedistill.rundir import EvolveFiles
from edgedistill.teacher.evolve import rechecked

SOURCE = "edgedistill-evolved"
NOT_REWRITTEN = "no answer-first rewrite: the solves' annotations do not inline into one expression"


def verify_label(proposal: dict, solves: list[dict], seed: Question, cfg) -> tuple[dict | None, str | None]:
    """A rewritten work-order line is kept when the teacher's solves agree, by majority, on its seed's label; the
    target is that label with the reasoning of the first solve that reached it."""
    question = Question(id=proposal["id"], question=proposal["question"], answer=proposal["reference"],
                        answer_type="label", options=seed.options)
    answer, agreement = majority([s.get("predicted") for s in solves], question)
    if answer is None or agreement < cfg.min_agreement:
        return None, f"no majority among the solves (agreement {agreement:.2f})"
    if not is_correct(answer, question):
        return None, f"the solves' majority {answer} is not its seed's label {proposal['reference']}"
    reason = next(reasoning_of(s["text"]) for s in solves if is_correct(s.get("predicted"), question))
    provenance = {"seed_id": seed.id, "kind": proposal["kind"], "style": proposal.get("style"),
                  "teacher": proposal["teacher"]["model"], "prompt_sha256": proposal["teacher"]["prompt_sha256"],
                  "agreement": round(agreement, 3), "solves": len(solves), "target": "label"}
    return {"id": proposal["id"], "question": proposal["question"], "answer": seed.answer, "answer_type": "label",
            "options": seed.options, "rationale": reason or None, "topic": seed.topic, "source": SOURCE,
            "provenance": {k: v for k, v in provenance.items() if v is not None}}, None


def verify(proposal: dict, solves: list[dict], seed: Question, cfg) -> tuple[dict | None, str | None]:
    """(the kept record, None) or (None, the reason it is rejected)."""
    if seed.answer_type == "label":
        return verify_label(proposal, solves, seed, cfg)
    reference = proposal["reference"]
    question = Question(id=proposal["id"], question=proposal["question"], answer=reference)
    answer, agreement = majority([s.get("predicted") for s in solves], question)
    if answer is None or agreement < cfg.min_agreement:
        return None, f"no majority among the solves (agreement {agreement:.2f})"
    if not numbers_match(reference, float(answer)):
        source = "its seed's answer" if proposal["kind"] == "reword" else "its expression's value"
        return None, f"the solves' majority {answer} is not {source} {reference}"
    expression, reason = None, None
    for solve in solves:
        if numbers_match(reference, float(solve.get("predicted") or "nan")):
            reasoning = reasoning_of(solve["text"])
            expression = inline_annotations(reasoning, reference, proposal["question"])
            if expression and not check_annotations(reasoning):
                reason, how = reasoning, "inlined"
                break
    if expression is None or reason is None:   # a rewording showing all its seed's numbers can take the seed's
        if not (proposal["kind"] == "reword" and seed.answer_expr and seed.rationale
                and over_question_numbers(seed.answer_expr, proposal["question"])):
            return None, NOT_REWRITTEN
        expression, reason, how = seed.answer_expr, seed.rationale, "seed"
    provenance = {"seed_id": seed.id, "kind": proposal["kind"], "style": proposal.get("style"),
                  "partner_id": proposal.get("partner"), "teacher": proposal["teacher"]["model"],
                  "prompt_sha256": proposal["teacher"]["prompt_sha256"], "agreement": round(agreement, 3),
                  "solves": len(solves), "target": how}
    return {"id": proposal["id"], "question": proposal["question"], "answer": reference, "answer_type": "number",
            "answer_expr": expression, "rationale": reason, "topic": seed.topic, "source": SOURCE,
            "provenance": {k: v for k, v in provenance.items() if v is not None}}, None


def instances(record: dict, count: int) -> list[dict]:
    """`count` more questions from a kept one whose numbers are slots, computed by the calculator."""
    if record["answer_type"] != "number":
        return []
    template = Template.of(record["question"], record["answer_expr"], record["answer"])
    if template is None or not count:
        return []
    rng = random.Random(zlib.crc32(record["id"].encode()))
    made, seen = [], {record["question"]}
    for _ in range(count * 3):
        if len(made) >= count:
            break
        drawn = template.instantiate(rng)
        if drawn is None:
            break
        question, expression, answer, mapping = drawn
        reasoning = substitute(record["rationale"], mapping)
        if question in seen or reasoning is None or check_annotations(reasoning):
            continue
        seen.add(question)
        made.append({**record, "id": f"{record['id']}~i{len(made)}", "question": question, "answer": answer,
                     "answer_expr": expression, "rationale": reasoning,
                     "provenance": {**record["provenance"], "template_of": record["id"]}})
    return made


def near_a_line(record: dict, held_lines: list[str], cfg) -> bool:
    """Is a kept work-order line equal to, or within a small edit distance (characters, `near_copy`) of, a dev or
    held-out line? Work-order lines are a few words, too short for the word-run check."""
    line = (work_order_text(record["question"]) or "").lower()
    return bool(line) and any(difflib.SequenceMatcher(None, line, held).ratio() >= cfg.near_copy
                              for held in held_lines)


def near_duplicates(texts: list[str], seeds: list[str], threshold: float, embedder_folder) -> list[bool]:
    """Per text: is it within `threshold` cosine of a seed or of an earlier text?"""
    from edgedistill.teacher.select import embed
    vectors = embed(seeds + texts, embedder_folder)
    seed_vectors, text_vectors = vectors[:len(seeds)], vectors[len(seeds):]
    flags, kept = [], []
    for i, vector in enumerate(text_vectors):
        near_seed = bool(len(seed_vectors)) and float(np.max(seed_vectors @ vector)) >= threshold
        near_kept = bool(kept) and float(np.max(text_vectors[kept] @ vector)) >= threshold
        flags.append(near_seed or near_kept)
        if not flags[-1]:
            kept.append(i)
    return flags


def write_evolve_views(config: Config, seeds: list[Question], files: EvolveFiles) -> list[Question]:
    cfg = config.teacher.evolve
    by_id = {q.id: q for q in seeds}
    proposals = AppendLog(files.proposals, key="id").rows()
    solves = by_question({**s, "question_id": s["proposal_id"]} for s in AppendLog(files.solves, key="id").rows())
    kept, rejected, pending, seed_answer = [], [], 0, Counter()
    for proposal in proposals:
        seed = by_id.get(proposal["seed_id"])
        if seed is None:
            continue
        proposal = rechecked(proposal, seed, cfg.near_copy)   # a check added since it was written applies too
        if "rejected" in proposal:
            rejected.append({**proposal, "stage": "written"})
            continue
        group = solves.get(proposal["id"], [])
        if len(group) < cfg.solves:
            pending += 1
            continue
        record, reason = verify(proposal, group[:cfg.solves], seed, cfg)
        if proposal["kind"] == "reword":   # how often the teacher's solves of a rewording reach its seed's answer
            seed_answer["solved"] += 1
            seed_answer["majority is the seed's answer"] += record is not None or reason == NOT_REWRITTEN
        if record is None:
            rejected.append({**proposal, "rejected": reason, "stage": "solved",
                             "predicted": [s.get("predicted") for s in group]})
        else:
            kept.append(record)
    held_questions = [q.question for spec in (config.data.eval, config.data.dev)
                      for q in load_questions(spec, need_answers=False)]
    held = set().union(*(word_runs(text, cfg.ngram) for text in held_questions))
    held_lines = [line.lower() for line in map(work_order_text, held_questions) if line]
    # the seed generator's check; a work-order question is checked by its line (the template around it is shared)
    shares_a_run = lambda text: bool(word_runs(work_order_text(text) or text, cfg.ngram) & held)   # noqa: E731
    clean = []
    for record in kept:
        reason = (f"shares a {cfg.ngram}-word run with a dev or held-out question" if shares_a_run(record["question"])
                  else "equal or close to a dev or held-out work-order line" if near_a_line(record, held_lines, cfg)
                  else None)
        if reason:
            rejected.append({"id": record["id"], "kind": record["provenance"]["kind"], "question": record["question"],
                             "rejected": reason, "stage": "cleaned"})
        else:
            clean.append(record)
    if clean and cfg.duplicate_similarity < 1.0:
        from edgedistill.models import embedder_folder
        flags = near_duplicates([r["question"] for r in clean], [q.question for q in seeds], cfg.duplicate_similarity,
                                embedder_folder(config.teacher.select.embedder, config.allow_network))
        rejected += [{"id": r["id"], "kind": r["provenance"]["kind"], "question": r["question"], "stage": "cleaned",
                      "rejected": "near-duplicate (embedding) of a seed or an earlier kept question"}
                     for r, near in zip(clean, flags) if near]
        clean = [r for r, near in zip(clean, flags) if not near]
    multiplied = [made for record in clean for made in instances(record, cfg.instances)]
    multiplied = [r for r in multiplied if not shares_a_run(r["question"])]
    records = clean + multiplied
    write_jsonl_atomic(files.kept, records)
    write_jsonl_atomic(files.rejected, rejected)
    summary = summarize(proposals, clean, multiplied, rejected, pending, read_json_object(files.progress))
    summary["rewordings_reaching_seed_answer"] = dict(seed_answer)
    write_json_atomic(files.summary, summary)
    write_text_atomic(files.card, card(summary, clean, multiplied, rejected, config))
    print(f"[evolve] {summary['kept_questions']} questions kept ({summary['kept_by_kind']}), "
          f"{summary['instances']} more from templates; {len(rejected)} rejected; {pending} still to solve",
          flush=True)
    return [Question(**{k: v for k, v in r.items() if k != "provenance"}) for r in records]


def reason_kind(reason: str) -> str:
    """A rejection reason without its particulars, for counting: "lost the seed's number(s) N", "... majority N"."""
    return re.sub(r"\[[^\]]*\]|-?\d[\d.,]*", "N", reason.split(" (")[0].split(":")[0]).strip()


def summarize(proposals, clean, multiplied, rejected, pending, progress) -> dict:
    kinds = Counter(p["kind"] for p in proposals)
    kept = Counter(r["provenance"]["kind"] for r in clean)
    return {"written": dict(kinds), "kept_by_kind": dict(kept), "kept_questions": len(clean),
            "kept_rate": {k: round(kept[k] / kinds[k], 3) for k in kinds if kinds[k]},
            "instances": len(multiplied), "records": len(clean) + len(multiplied), "pending": pending,
            "rejected_by_reason": dict(Counter(reason_kind(r["rejected"]) for r in rejected).most_common()),
            "targets": dict(Counter(r["provenance"]["target"] for r in clean)),
            "teacher_tokens": progress.get("tokens", 0), "teacher_seconds": round(progress.get("seconds", 0.0), 1),
            "tokens_per_second": round(progress.get("tokens", 0) / max(1e-9, progress.get("seconds", 0.0)), 2)}


def card(summary: dict, clean: list[dict], multiplied: list[dict], rejected: list[dict], config: Config) -> str:
    cfg = config.teacher.evolve
    shown_instances = min(4, len(multiplied))   # 20 kept examples, up to 4 of them calculator instances
    kept_examples = clean[::max(1, len(clean) // (20 - shown_instances))][:20 - shown_instances] + \
        multiplied[::max(1, len(multiplied) // 4)][:shown_instances]
    rejected_examples = rejected[::max(1, len(rejected) // 10)][:10]
    lines = ["# Evolved questions: written by the teacher, verified by its solves and the calculator", "",
             f"- teacher: `{cfg.model or config.teacher.model}`; seeds: `{', '.join(s.source for s in config.data.sources())}`; seed {config.seed}",
             f"- written by kind: {summary['written']}; kept: {summary['kept_by_kind']} (rate {summary['kept_rate']})",
             f"- more from templates (new numbers, calculator): {summary['instances']}; records: {summary['records']}",
             f"- rejected by reason: {summary['rejected_by_reason']}",
             f"- teacher tokens: {summary['teacher_tokens']} in {summary['teacher_seconds'] / 3600:.2f} h "
             f"({summary['tokens_per_second']} tok/s)",
             f"- settings: solves {cfg.solves}, min agreement {cfg.min_agreement}, near-copy {cfg.near_copy}, "
             f"duplicates {cfg.duplicate_similarity}, {cfg.ngram}-word runs checked against `{config.data.eval}` "
             f"and `{config.data.dev}`", "", "## Kept (examples)", ""]
    lines += [f"- [{r['provenance']['kind']}{' + numbers' if 'template_of' in r['provenance'] else ''}] "
              f"{r['question']} -> " + (f"`{r['answer_expr']}` = {r['answer']}" if r.get("answer_expr") else r["answer"])
              for r in kept_examples]
    lines += ["", "## Rejected (examples)", ""]
    lines += [f"- [{r.get('kind')}] {r.get('question') or json.dumps(r.get('text', ''))[:160]} -- {r['rejected']}"
              for r in rejected_examples]
    return "\n".join(lines) + "\n"
