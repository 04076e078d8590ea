"""The one evaluation path: `evaluate(generator, questions, ...)` and the sample-based metrics under it, shared by
the quick `edgedistill eval`, the comparison report and the run's eval stage (evals/), the dev evaluation during
training (student/dev.py), export parity's pass@1 (export/parity.py) and the app's confidence (`agreement`).

Every decode runs through the generator the app uses (calculator on, stopped at the end of the Answer line) unless
said otherwise:

    greedy       pass@1 with a 95% Wilson interval, tokens and seconds to the answer
    k samples    (temperature 0.7) unbiased pass@k, maj@k, and the agreement of the samples with the greedy answer:
                 the app's confidence signal, whose calibration (ECE, Brier, reliability bins) is measured here
    no calc      (calculator_row) greedy again with the calculator off: what the calculator is worth
    to the end   (end_subset) a small subset decoded past the Answer line (the whole rationale): tokens and seconds
                 to the end, and the accuracy of the answer read from the full text against the one read at the
                 delimiter
    labels       when every question's answer is a label or an option letter: macro-F1 with a bootstrap interval
                 beside accuracy (label_metrics.py)

The base model is judged with the same instruction plus worked examples as earlier chat turns (`shots`), so it is
judged on ability, not on format; a fine-tuned student gets none.

A question whose prompt does not fit the model's context with the new tokens is left out before decoding, named by
its file and line, and counted in the result (`skipped`, `skipped_questions`): one over-long work order must not
stop a benchmark of hundreds, and `n` is what was scored.
"""
from __future__ import annotations

import math
import sys
import time
from math import comb

from edgedistill import UserError
from edgedistill.calibration import brier_score, expected_calibration_error, fit_calibration, reliability_bins
from edgedistill.checkers import canonical, extract_answer, is_correct, token_f1
from edgedistill.datasets import Benchmark, where_of
from edgedistill.formats import INSTRUCTION, answer_line, chat
from edgedistill.label_metrics import label_scores
from edgedistill.records import Question
from edgedistill.results import PASS_AT_1, PASS_AT_1_AT_DELIMITER, PASS_AT_1_FULL_TEXT, EvalResult, ResultRow


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n >= k samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Not "any of the first k", which is noisier and depends on the sample order."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval for a proportion: sane at 0/n and n/n, unlike the normal approximation."""
    if n == 0:
        return [0.0, 0.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def count_tokens(generator, texts: list[str]) -> list[int]:
    """Completion tokens per text, with the generator's own tokenizer; [] when it has none (a server, a fake)."""
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    if callable(getattr(generator, "encode", None)):   # llama.cpp: its own vocabulary
        return [len(generator.encode(t)) for t in texts]
    return []


def agreement(greedy_answer: str | None, sampled_answers: list[str | None], question) -> int:
    """How many sampled answers have the greedy answer's canonical form: the app's confidence signal, which the eval
    stage calibrates (0 when the greedy answer is not a valid answer)."""
    from edgedistill.checkers import canonical
    mine = canonical(greedy_answer, question)
    return 0 if mine is None else sum(canonical(a, question) == mine for a in sampled_answers)


def sampled_scores(generator, questions, *, k: int = 4, instruction: str | None = None, shots=(),
                   calculator: bool = True, max_new_tokens: int = 48, temperature: float = 0.7, seed: int = 0,
                   batch_size: int = 64, progress: str | None = None, tables=None) -> dict:
    """Correct answers of one greedy decode and of k samples per question (both stopped at the end of the Answer
    line): {"greedy": [bool], "pass_at_k": sum, "maj_at_k": sum, "tokens": [tokens to the answer], ...}.

    pass@k is the unbiased estimator with n = k samples; maj@k is right when the most frequent answer is.
    Per question it also returns what the evaluation report and the confidence calibration need:
    "greedy_texts", "greedy_answers", "sample_correct" (c of k), "majority_correct" and "agreement" (how many of
    the k samples have the greedy answer's canonical form: the app's confidence signal), and the decode seconds.
    """
    from edgedistill.checkers import majority
    from edgedistill.generation import Sampling
    conversations = [chat(q, shots, instruction=instruction or INSTRUCTION) for q in questions]
    started = time.time()
    greedy = generator.generate(conversations, Sampling(max_new_tokens=max_new_tokens, calculator=calculator,
                                                        tables=tables),
                                batch_size=batch_size, progress=progress and f"{progress} greedy")
    greedy_answers = [extract_answer(t, q.answer_type) for t, q in zip(greedy, questions)]
    scores = {"greedy": [is_correct(a, q) for a, q in zip(greedy_answers, questions)],
              "pass_at_k": 0.0, "maj_at_k": 0, "greedy_texts": greedy, "greedy_answers": greedy_answers,
              "greedy_seconds": round(time.time() - started, 2), "sample_correct": [], "majority_correct": [],
              "agreement": [], "sampled_lines": [], "sampled_seconds": 0.0}
    if k > 1:
        started = time.time()
        sampled = generator.generate([c for c in conversations for _ in range(k)],
                                     Sampling(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                              calculator=calculator, tables=tables),
                                     batch_size=batch_size, progress=progress and f"{progress} x{k}")
        scores["sampled_seconds"] = round(time.time() - started, 2)
        for i, q in enumerate(questions):
            answers = [extract_answer(t, q.answer_type) for t in sampled[i * k:(i + 1) * k]]
            right = sum(is_correct(a, q) for a in answers)
            vote, _ = majority(answers, q)
            scores["sample_correct"].append(right)
            scores["majority_correct"].append(vote is not None and is_correct(vote, q))
            scores["agreement"].append(agreement(greedy_answers[i], answers, q))
            # the samples' Answer lines, kept so other confidence signals (the computation's agreement, not only
            # the value's) can be studied from a stored result without decoding again
            scores["sampled_lines"].append([answer_line(t) for t in sampled[i * k:(i + 1) * k]])
            scores["pass_at_k"] += pass_at_k(k, right, k)
            scores["maj_at_k"] += scores["majority_correct"][-1]
    scores["tokens"] = count_tokens(generator, greedy)
    return scores


# --- questions too long for the model's context ---------------------------------------------------------------------

def context_length(generator) -> int | None:
    """Tokens one row may hold, prompt and completion together, where the backend tells: llama.cpp's context per
    row, the ONNX model's context, a transformers model's position limit. None for a server or vLLM, which keep
    their own limits."""
    for name in ("context_per_row", "context"):
        value = getattr(generator, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    value = getattr(getattr(getattr(generator, "model", None), "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def over_context(generator, questions: list[Question], *, shots=(), max_new_tokens: int = 48,
                 instruction: str = INSTRUCTION) -> dict[int, int]:
    """{position: prompt tokens} of the questions whose prompt, as the eval renders it, leaves no room in the
    model's context for `max_new_tokens` new tokens (llama.cpp's and ONNX's own test); {} when the backend has no
    tokenizer or no known context."""
    context = context_length(generator)
    if context is None or not callable(getattr(generator, "prompt_ids", None)):
        return {}
    lengths = [len(generator.prompt_ids(chat(q, shots, instruction=instruction))) for q in questions]
    return {i: n for i, n in enumerate(lengths) if n + max_new_tokens > context}


def leave_out_too_long(generator, questions: list[Question], *, shots=(), max_new_tokens: int = 48,
                       instruction: str = INSTRUCTION, label: str | None = "eval"
                       ) -> tuple[list[Question], list[dict]]:
    """(the questions that fit the model's context, one record per question left out: id, where it came from, its
    prompt tokens). Before any decoding, because the llama.cpp and ONNX backends refuse a whole batch for one long
    prompt, naming only its position. Every question too long: nothing to measure, a UserError."""
    long = over_context(generator, questions, shots=shots, max_new_tokens=max_new_tokens, instruction=instruction)
    if not long:
        return questions, []
    where = where_of(questions)
    skipped = [{"id": questions[i].id, "where": where[i], "prompt_tokens": n} for i, n in long.items()]
    context = context_length(generator)
    if len(long) == len(questions):
        shortest = min(long, key=long.get)
        raise UserError(f"{label or 'eval'}: all {len(questions)} questions are too long for the model's {context}-"
                        f"token context with {max_new_tokens} new tokens (the shortest prompt, {where[shortest]}, "
                        f"has {long[shortest]} tokens): use fewer shots, a smaller max_new_tokens or a model with a "
                        f"longer context")
    warn_skipped(skipped, len(questions), context, max_new_tokens, label)
    kept = [i for i in range(len(questions)) if i not in long]
    return Benchmark([questions[i] for i in kept], [where[i] for i in kept]), skipped


def warn_skipped(skipped: list[dict], total: int, context: int, max_new_tokens: int, label: str | None,
                 shown: int = 10) -> None:
    """On stderr, so `--json` output stays one parsable line: the count, then the first `shown` by file and line."""
    print(f"warning: {label or 'eval'}: skipped {len(skipped)} of {total} questions: with {max_new_tokens} new tokens "
          f"their prompt exceeds the model's {context}-token context", file=sys.stderr, flush=True)
    for record in skipped[:shown]:
        print(f"  {record['where']} (id {record['id']}): {record['prompt_tokens']} prompt tokens", file=sys.stderr)
    if len(skipped) > shown:
        print(f"  ... and {len(skipped) - shown} more (the result's skipped_questions lists them)", file=sys.stderr)


# --- calibration of the app's confidence, topics, the rationale's cost ----------------------------------------------

def cross_fitted_confidence(agreements: list[int], corrects: list[bool], k: int, temperature: float) -> list[float]:
    """Calibrated confidence of each question from a calibration fitted on the other half (2-fold: even and odd
    positions), so no question's confidence was fitted on its own correctness."""
    confidences = [0.0] * len(agreements)
    halves = [range(0, len(agreements), 2), range(1, len(agreements), 2)]
    for fit, apply in ((halves[0], halves[1]), (halves[1], halves[0])):
        calibration = fit_calibration([agreements[i] for i in fit], [corrects[i] for i in fit], k, temperature)
        for i in apply:
            confidences[i] = calibration.probability(agreements[i])
    return confidences


def calibration_metrics(agreements: list[int], corrects: list[bool], k: int, temperature: float) -> dict:
    """ECE and Brier of raw agreement / k and of the cross-fitted calibrated probability, with reliability bins."""
    raw = [a / k for a in agreements]
    calibrated = cross_fitted_confidence(agreements, corrects, k, temperature)
    return {"ece_raw": round(expected_calibration_error(raw, corrects), 4),
            "brier_raw": round(brier_score(raw, corrects), 4),
            "ece": round(expected_calibration_error(calibrated, corrects), 4),
            "brier": round(brier_score(calibrated, corrects), 4),
            "reliability_raw": reliability_bins(raw, corrects), "reliability": reliability_bins(calibrated, corrects)}


def by_topic(questions: list[Question], corrects: list[bool]) -> dict:
    topics: dict[str, list[int]] = {}
    for q, right in zip(questions, corrects):
        if q.topic:
            n_right = topics.setdefault(q.topic, [0, 0])
            n_right[0] += 1
            n_right[1] += bool(right)
    return {topic: {"n": n, PASS_AT_1: round(right / n, 4)} for topic, (n, right) in sorted(topics.items())}


def decode_to_the_end(generator, questions: list[Question], *, shots, max_new_tokens: int, batch_size: int,
                      instruction: str = INSTRUCTION, label: str | None) -> dict:
    """Greedy past the Answer line to the end of the rationale: tokens and seconds to the end, and whether the
    answer read from the full text is as often right as the one read where the app stops (the delimiter)."""
    from edgedistill.generation import ANSWER_LINE_DONE, Sampling
    started = time.time()
    texts = generator.generate([chat(q, shots, instruction=instruction) for q in questions],
                               Sampling(max_new_tokens=max_new_tokens, stop_after_answer=False),
                               batch_size=batch_size, progress=label and f"{label} to the end")
    seconds = time.time() - started
    full = [is_correct(extract_answer(t, q.answer_type), q) for t, q in zip(texts, questions)]
    to_end = count_tokens(generator, texts)
    cut = [t[:m.end()] if (m := ANSWER_LINE_DONE.search(t)) else t for t in texts]
    to_answer = count_tokens(generator, cut)
    return {"n": len(questions), PASS_AT_1_FULL_TEXT: round(sum(full) / len(questions), 4),
            "tokens_to_end": round(sum(to_end) / len(to_end), 1) if to_end else None,
            "tokens_to_answer": round(sum(to_answer) / len(to_answer), 1) if to_answer else None,
            "seconds_to_end": round(seconds / len(questions), 3), "max_new_tokens": max_new_tokens}


def to_the_end(generator, subset: list[Question], greedy: list[bool], *, shots, end_tokens: int, batch_size: int,
               instruction: str = INSTRUCTION, label: str | None) -> dict | None:
    """decode_to_the_end on the subset's questions that also fit the context with `end_tokens` new tokens (more
    than the answer needs), with the greedy pass@1 at the delimiter of the same questions; None when none fits."""
    long = over_context(generator, subset, shots=shots, max_new_tokens=end_tokens, instruction=instruction)
    picked = [i for i in range(len(subset)) if i not in long]
    if long:
        print(f"warning: {label or 'eval'}: {len(long)} of the {len(subset)} questions decoded to the end are left "
              f"out of it: with {end_tokens} new tokens their prompt exceeds the model's "
              f"{context_length(generator)}-token context", file=sys.stderr, flush=True)
    if not picked:
        return None
    end = decode_to_the_end(generator, [subset[i] for i in picked], shots=shots, max_new_tokens=end_tokens,
                            batch_size=batch_size, instruction=instruction, label=label)
    end[PASS_AT_1_AT_DELIMITER] = round(sum(greedy[i] for i in picked) / len(picked), 4)
    if long:
        end["skipped"] = len(long)
    return end


# --- the one evaluation ---------------------------------------------------------------------------------------------

def evaluate(generator, questions: list[Question], *, shots: list[tuple[Question, str]] = (), k: int = 4,
             temperature: float = 0.7, max_new_tokens: int = 48, batch_size: int = 64,
             instruction: str | None = None, calculator: bool = True, calculator_row: bool = False,
             end_subset: int = 0, end_tokens: int = 256, seed: int = 0, label: str | None = "eval",
             tables=None) -> EvalResult:
    """Everything measured of one model on one set of questions (see the module docstring). k = 1: greedy pass@1
    only (the quick check, export parity); k > 1 adds pass@k, maj@k and the calibration of the app's confidence.
    `instruction`: another system prompt (None: the answer-first one); `label`: the progress bars' and warnings'
    name (None: no progress bars). "rows" holds one record per question scored, "skipped_questions" one per
    question left out as too long for the model's context. `tables`: the table tool the model's queries run on
    (tables.TableTool), for questions about the plant's tables."""
    started = time.time()
    instruction = instruction or INSTRUCTION
    questions, skipped = leave_out_too_long(generator, questions, shots=shots, max_new_tokens=max_new_tokens,
                                            instruction=instruction, label=label)
    n = len(questions)
    if not n:
        raise UserError(f"{label or 'eval'}: no questions to evaluate")
    scores = sampled_scores(generator, questions, k=k, instruction=instruction, shots=shots, calculator=calculator,
                            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                            batch_size=batch_size, progress=label, tables=tables)
    right = sum(scores["greedy"])
    result = EvalResult(
        n=n, k=k, shots=len(shots), correct=right, pass_at_1=round(right / n, 4), ci95=wilson_interval(right, n),
        tokens_to_answer=round(sum(scores["tokens"]) / len(scores["tokens"]), 1) if scores["tokens"] else None,
        seconds_to_answer=round(scores["greedy_seconds"] / n, 3), topics=by_topic(questions, scores["greedy"]),
        skipped=len(skipped), skipped_questions=skipped)
    if k > 1:
        result.pass_at_k = round(scores["pass_at_k"] / n, 4)
        result.maj_at_k = round(scores["maj_at_k"] / n, 4)
        result.maj_ci95 = wilson_interval(scores["maj_at_k"], n)
        result.temperature = temperature
        result.figures.update(calibration_metrics(scores["agreement"], scores["greedy"], k, temperature))
    if calculator_row:
        plain = sampled_scores(generator, questions, k=1, instruction=instruction, shots=shots, calculator=False,
                               max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, tables=tables,
                               progress=label and f"{label} no calculator")
        result.pass_at_1_no_calculator = round(sum(plain["greedy"]) / n, 4)
        result.ci95_no_calculator = wilson_interval(sum(plain["greedy"]), n)
    if end_subset:
        result.to_the_end = to_the_end(generator, questions[:end_subset], scores["greedy"], shots=shots,
                                       end_tokens=end_tokens, batch_size=batch_size, instruction=instruction,
                                       label=label)
    result.rows = [ResultRow(id=q.id, topic=q.topic, answer_type=q.answer_type, reference=q.answer,
                             predicted=scores["greedy_answers"][i], correct=scores["greedy"][i],
                             agreement=scores["agreement"][i] if scores["agreement"] else None,
                             sampled=scores["sampled_lines"][i] if scores["sampled_lines"] else None,
                             text=scores["greedy_texts"][i]) for i, q in enumerate(questions)]
    free_text = [i for i, q in enumerate(questions) if q.answer_type == "text"]
    if free_text:   # the stated rule for free text: normalised exact match and token F1, side by side
        result.figures["text_exact_match"] = round(sum(scores["greedy"][i] for i in free_text) / len(free_text), 4)
        result.figures["text_token_f1"] = round(sum(token_f1(scores["greedy_answers"][i], questions[i].answer)
                                                    for i in free_text) / len(free_text), 4)
    if all(q.answer_type in ("label", "choice") for q in questions):   # a closed set: macro-F1 beside accuracy
        by_id = {q.id: q for q in questions}
        result.figures.update(label_scores(result.rows, lambda answer, row: canonical(answer, by_id[row.id])))
    result.seconds = round(time.time() - started, 1)
    result.seconds_per_question = round(result.seconds / n, 3)
    return result
