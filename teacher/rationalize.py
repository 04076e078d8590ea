"""Rationales for labelled data (`teacher.rationalize`): the teacher explains a gold answer, and the explanation is
kept only if it leads the teacher back to that answer when the answer's own words are hidden.

STaR's rationalisation (Zelikman et al. 2022, arXiv 2203.14465) and distilling step-by-step (Hsieh et al. 2023,
arXiv 2305.02301): a work-order line, a multiple-choice question or a spreadsheet row comes with its answer and no
reasoning. Per chunk of such seeds, two calls, then one append to `log.jsonl`:

    1. explain  the question, its options and its gold answer: "explain why" (one or two sentences)
    2. check    the question and options again, with the explanation as a hint in which the answer's words (and,
                for a choice, its letter) are masked as ___; greedy, answer-first. Kept only if the teacher's
                answer is the gold one.

A kept explanation becomes the seed's `rationale`, so the dataset teacher writes `Answer: <gold>` then `Reason:
<explanation>`; a seed whose explanation fails keeps its label-only target. Every row records its teacher, prompt
hash and seed. Resume: rows are keyed `<seed id>~r0`; chunks are cut from the eligible seeds in order and seeded
by their index, so after kill -9 a rerun writes only the chunks that are missing, and the same rows.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter

from edgedistill.answer_rules import words
from edgedistill.checkers import canonical, extract_answer, is_correct
from edgedistill.datasets import work_order_text
from edgedistill.config import Config
from edgedistill.formats import user_message
from edgedistill.generation import Sampling
from edgedistill.records import AppendLog, Question, read_json_object, to_dict, write_json_atomic, \
    write_jsonl_atomic
from edgedistill.rundir import RationalizeFiles
from edgedistill.teacher.clock import RoundClock, chunk_seed, unfinished_chunks
from edgedistill.teacher.evolve_prompts import prompt_hash

EXPLAIN_SYSTEM = ("You are a senior maintenance engineer. You are given a question and its correct answer. In one or "
                  "two short sentences, explain why that answer is right, from how the equipment works. Do not "
                  "repeat the question.")
EXPLAIN_AFTER = "\n\nCorrect answer: {answer}\nExplain why."   # after the question (and its options)
CHECK_SYSTEM = ("Answer the question. A hint explains the answer, with the answer's own words hidden as ___. Reply "
                "with one line: 'Answer: ' and the answer, which is one of the options.")
CHECK_AFTER = "\nHint: {hint}"
# A label set is checked as lettered options: asked to name one of 22 labels, the 1.5B teacher wrote "Failure to
# ..." for most lines whatever the hint said (2 of 16 right); asked for a letter, 5 of 16.
CHECK_LABEL_SYSTEM = ("You classify maintenance work orders. A hint explains the answer, with the answer's own words "
                      "hidden as ___. Reply with the letter of the one option the hint supports, as "
                      "'Answer: <letter>'.")
# Rows checked with another check prompt are checked again (their explanations are kept): a change to the check
# applies to the whole log, at the cost of the checks alone.
CHECK_VERSION = prompt_hash([{"role": "system", "content": CHECK_SYSTEM + CHECK_LABEL_SYSTEM},
                             {"role": "user", "content": CHECK_AFTER}])
MASK = "___"
NOT_LED_BACK = "the masked explanation does not lead to the gold answer"
# Words of an answer that say nothing about it on their own: they stay visible in the hint.
FUNCTION_WORDS = {"the", "and", "for", "with", "from", "into", "not", "one", "any", "all", "its", "are", "was"}
_LEAD = re.compile(r"^\s*(?:reason|explanation|because|why)\s*[:,-]\s*", re.I)
_CHOICE_LETTER = r"\([A-Z]\)|\b(?:option|choice|answer)\s+[A-Z]\b|^[A-Z][.):]"   # "(D)", "option D", "D."


def eligible(seeds: list[Question], config) -> list[Question]:
    """Seeds with a gold answer, no rationale yet, and an answer type the config explains."""
    found = [q for q in seeds if q.answer is not None and not q.rationale and q.answer_type in config.answer_types]
    return found[:config.seeds] if config.seeds else found


def answer_text(q: Question) -> str:
    """The gold answer as the teacher should read it: a choice's option text with its letter, else the answer."""
    if q.answer_type == "choice" and q.options:
        index = ord(q.answer.strip().upper()[:1]) - ord("A")
        if 0 <= index < len(q.options):
            option = q.options[index]
            return option if option[:2].rstrip(".").strip() == q.answer.strip().upper() else f"{q.answer}. {option}"
    return q.answer


def answer_words(q: Question) -> set[str]:
    """The words a hint must not show: those of the gold answer (a choice's option text), bar function words."""
    text = re.sub(r"^[A-Z][.)]\s*", "", answer_text(q))
    return {w for w in words(text) if len(w) >= 3 and w not in FUNCTION_WORDS}


def clean_explanation(text: str) -> str:
    """The explanation as one paragraph of at most two whole sentences, without a leading 'Reason:' label (a last
    sentence cut off by the token limit is dropped when a whole one comes before it)."""
    text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", _LEAD.sub("", text)) if s]
    if len(sentences) > 1 and not sentences[-1].endswith((".", "!", "?")):
        sentences.pop()
    return " ".join(sentences[:2]).strip()


def mask(explanation: str, q: Question) -> str:
    """The explanation with the answer's words (and plurals: 'leaks' for 'leak') and, for a choice, its letter
    ("option D", "(D)") replaced by ___."""
    hidden = answer_words(q)
    masked = explanation
    if hidden:
        alternatives = "|".join(re.escape(w) for w in sorted(hidden, key=len, reverse=True))
        pattern = r"\b(?:" + alternatives + r")(?:s|es|ed|ing)?\b"
        masked = re.sub(pattern, MASK, masked, flags=re.I)
    if q.answer_type == "choice":
        masked = re.sub(_CHOICE_LETTER, MASK, masked, flags=re.M)
    return masked


def fault(explanation: str, masked: str) -> str | None:
    """Why an explanation is refused before its check, or None."""
    if len(words(explanation)) < 4:
        return "empty or too short"
    if len([w for w in words(masked) if w != "___"]) < 4:
        return "says little besides the answer"
    return None


def _turns(q: Question, system: str, after: str) -> list[dict]:
    """A closed label set goes in the system turn, the same for every seed of the set, so a batch prefills it once
    (the llama.cpp backend decodes the prompts' shared prefix once); options of one question stay in its user turn."""
    if q.answer_type == "label" and q.options:
        system += "\nThe possible answers: " + "; ".join(q.options) + "."
        question = q.question.strip()   # "... Answer with one of:" then the list, now in the system turn
        question = question[:-1] + " the possible answers." if question.endswith(":") else \
            f"{question} (one of the possible answers)"
    else:
        question = user_message(q)
    return [{"role": "system", "content": system}, {"role": "user", "content": question + after}]


def explain_conversation(q: Question) -> list[dict]:
    return _turns(q, EXPLAIN_SYSTEM, EXPLAIN_AFTER.format(answer=answer_text(q)))


def check_conversation(q: Question, hint: str) -> list[dict]:
    if q.answer_type == "label" and q.options:
        line = work_order_text(q.question) or q.question
        options = "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(q.options))
        return [{"role": "system", "content": CHECK_LABEL_SYSTEM},
                {"role": "user", "content": f"Work order: {line}\nHint: {hint}\nOptions:\n{options}"}]
    return _turns(q, CHECK_SYSTEM, CHECK_AFTER.format(hint=hint))


def checked_answer(text: str, q: Question) -> str | None:
    """The check's answer: for a label set, the option its letter names (a label written out counts too)."""
    if q.answer_type != "label" or not q.options:
        return extract_answer(text, q.answer_type)
    as_letter = Question(id=q.id, question="", answer_type="choice", options=q.options)
    said = extract_answer(text, "choice")
    letter = canonical(said.strip("<>[] ") if said else None, as_letter)   # "Answer: <B>" echoes the prompt's form
    return q.options[ord(letter) - ord("A")] if letter else extract_answer(text, "label")


def current(rows: list[dict]) -> dict[str, dict]:
    """The last row of each id (a re-check appends a new row for the same explanation)."""
    return {row["id"]: row for row in rows}


def judged(row: dict, q: Question | None) -> dict:
    """A checked row judged again from its stored check text by today's reading of it (a parsing fix applies to the
    whole log without a teacher call); other rows as they are."""
    if q is None or "check" not in row or "predicted" not in row:
        return row
    predicted = checked_answer(row["check"], q)
    verdict = {} if is_correct(predicted, q) else {"rejected": NOT_LED_BACK}
    return {k: v for k, v in row.items() if k != "rejected"} | {"predicted": predicted} | verdict


def settled(row: dict | None) -> bool:
    """Written and decided under today's check: refused before its check, or checked with CHECK_VERSION."""
    return row is not None and (row.get("check_version") == CHECK_VERSION or
                                ("rejected" in row and "predicted" not in row))


def run_rationalize(config: Config, seeds: list[Question], files: RationalizeFiles, teacher, model: str) -> None:
    """Explain and check, chunk by chunk, appending to the log; an explanation checked under an older check prompt
    is checked again, not explained again."""
    cfg = config.teacher.rationalize
    log = AppendLog(files.log, key="id")
    written = current(log.rows())
    todo = unfinished_chunks(eligible(seeds, cfg), cfg.batch_size, lambda q: not settled(written.get(f"{q.id}~r0")))
    if written:
        print(f"rationalize: resuming, {sum(map(settled, written.values()))} explanations already checked", flush=True)
    clock = RoundClock(files.progress, teacher, chunks=todo, desc="rationalize", unit="seed")
    for index, chunk in todo:
        seed_value = chunk_seed(config.seed, "rationalize", index)
        fresh = [q for q in chunk if f"{q.id}~r0" not in written]
        explain = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_after_answer=False,
                           calculator=False, seed=seed_value)
        texts = teacher.generate([explain_conversation(q) for q in fresh], explain,
                                 batch_size=max(1, len(fresh))) if fresh else []
        rows = {q.id: explained_row(q, text, model, teacher.backend, cfg.temperature, seed_value)
                for q, text in zip(fresh, texts)}
        for q in chunk:   # written before, under an older check: the same explanation, checked again
            old = written.get(f"{q.id}~r0")
            if old is not None and not settled(old):
                rows[q.id] = {k: v for k, v in old.items() if k not in ("rejected", "check", "predicted")} | \
                    ({"rejected": reason} if (reason := fault(old["rationale"], old["masked"])) else {})
        checked = [(q, rows[q.id]) for q in chunk if q.id in rows and "rejected" not in rows[q.id]]
        check = Sampling(max_new_tokens=cfg.check_max_new_tokens, temperature=0.0, stop_after_answer=True,
                         calculator=False, seed=seed_value)
        answers = teacher.generate([check_conversation(q, row["masked"]) for q, row in checked], check,
                                   batch_size=max(1, len(checked))) if checked else []
        for (q, row), answer in zip(checked, answers):
            row.update(check=answer, predicted=checked_answer(answer, q), check_version=CHECK_VERSION)
            if not is_correct(row["predicted"], q):
                row["rejected"] = NOT_LED_BACK
        log.append(rows[q.id] for q in chunk if q.id in rows)
        clock.tick(len(chunk))
    clock.close()


def explained_row(q: Question, text: str, model: str, backend: str, temperature: float, seed_value: int) -> dict:
    """A fresh explanation's log row: the text, the cleaned rationale, its masked hint, and a refusal before any
    check when the explanation is too short or says nothing but the answer."""
    explanation = clean_explanation(text)
    masked = mask(explanation, q)
    reason = fault(explanation, masked)
    return {"id": f"{q.id}~r0", "question_id": q.id, "answer_type": q.answer_type, "text": text,
            "rationale": explanation, "masked": masked, **({"rejected": reason} if reason else {}),
            "teacher": {"model": model, "backend": backend, "temperature": temperature, "seed": seed_value,
                        "prompt_sha256": prompt_hash(explain_conversation(q))}}


def write_rationalize_views(seeds: list[Question], files: RationalizeFiles) -> list[Question]:
    """The seeds with their kept explanations as rationales (the others as they were), `explained.jsonl` and the
    summary; rebuilt from the whole log every time."""
    by_id = {q.id: q for q in seeds}
    latest = current(AppendLog(files.log, key="id").rows()).values()
    rows = [judged(row, by_id.get(row["question_id"])) for row in latest]
    kept = {row["question_id"]: row["rationale"] for row in rows if "rejected" not in row and row.get("rationale")}
    out = [dataclasses.replace(q, rationale=kept[q.id]) if q.id in kept else q for q in seeds]
    write_jsonl_atomic(files.explained, [to_dict(q) for q in out if q.id in kept])
    progress = read_json_object(files.progress)
    by_type = Counter(row["answer_type"] for row in rows)
    kept_by_type = Counter(row["answer_type"] for row in rows if "rejected" not in row)
    write_json_atomic(files.summary, {
        "explained": len(rows), "kept": len(kept),
        "kept_by_answer_type": {kind: f"{kept_by_type[kind]}/{n}" for kind, n in sorted(by_type.items())},
        "rejected": dict(Counter(row["rejected"] for row in rows if "rejected" in row)),
        "teacher_tokens": progress.get("tokens", 0), "teacher_seconds": round(progress.get("seconds", 0.0), 1),
        "tokens_per_second": round(progress.get("tokens", 0) / max(1e-9, progress.get("seconds", 0.0)), 1)})
    return out
