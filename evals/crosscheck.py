"""Cross-check of our number scoring against independent scorers, on the same generations.

    math-verify    Hugging Face's math answer verifier: `verify(parse(reference), parse(model text))`
    lm-eval rule   lm-evaluation-harness's gsm8k "flexible-extract": the last number in the text, commas, `$` and
                   a final `.` removed, then exact string match (reimplemented here in a few lines; the harness
                   itself is a large install)

Both read the model's answer line as a reader sees it (each `<<expr=value>>` shown as its value), or the whole text
when there is no Answer line. Where a scorer disagrees with ours, the case is listed in the report, so a reader
can judge which one is right.
"""
from __future__ import annotations

import re

from edgedistill.calculator import ANNOTATION
from edgedistill.formats import answer_line
from edgedistill.results import ResultRow

_LM_EVAL_NUMBER = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def visible_answer(text: str) -> str:
    """The answer line with calculator annotations replaced by their values (`<<48*7.5=360>>` reads 360)."""
    line = answer_line(text)
    return ANNOTATION.sub(lambda m: f" {m.group(2)} ", line if line is not None else text).strip()


def lm_eval_flexible(text: str, reference: str) -> bool:
    """lm-evaluation-harness gsm8k flexible-extract: last regex match, then ignore `,`, `$` and a trailing `.`."""
    matches = _LM_EVAL_NUMBER.findall(text)
    if not matches:
        return False
    found = next(m for m in matches[-1] if m)

    def clean(s: str) -> str:
        return re.sub(r"\.$", "", s.replace(",", "").replace("$", "").strip()).lower()
    return clean(found) == clean(str(reference))


def math_verify_correct(text: str, reference: str) -> tuple[bool, str]:
    """(verdict, what math-verify parsed from the text)."""
    from math_verify import parse, verify
    try:
        gold, said = parse(str(reference)), parse(text)
        return bool(said) and bool(verify(gold, said)), str(said[-1]) if said else ""
    except Exception as exc:   # math-verify raises on odd input; a crash there must not end the report
        return False, f"error: {type(exc).__name__}"


def crosscheck(rows: list[ResultRow]) -> dict:
    """Agreement of our verdicts with math-verify's and the lm-eval rule's on the number questions of `rows`
    (the evaluation's per-question records: reference, predicted, correct, text)."""
    numbers = [r for r in rows if r.answer_type == "number" and r.reference is not None]
    result = {"n": len(numbers), "math_verify_correct": 0, "lm_eval_correct": 0, "ours_correct": 0,
              "disagreements": []}
    for row in numbers:
        shown = visible_answer(row.text)
        mv, parsed = math_verify_correct(shown, row.reference)
        lm = lm_eval_flexible(shown, row.reference)
        result["math_verify_correct"] += mv
        result["lm_eval_correct"] += lm
        result["ours_correct"] += bool(row.correct)
        if mv != bool(row.correct) or lm != bool(row.correct):
            result["disagreements"].append({"id": row.id, "reference": row.reference, "answer": shown[:120],
                                            "ours": bool(row.correct), "math_verify": mv,
                                            "math_verify_parsed": parsed, "lm_eval": lm})
    return result
