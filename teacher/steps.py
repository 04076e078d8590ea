"""Step scores: how sound each reasoning step of a sample looks, so preference pairs can take the best and the worst.

A step is a sentence of the rationale (the text after `Reason:`). A sample's score is the minimum over its steps (a
chain of reasoning is as sound as its weakest step, the usual way a process reward model's step scores are
combined) and the mean is kept beside it. Two scorers, one method (`score(question, texts)`):

- `GroundingScorer` (the default; no model, instant): a step scores 0 when a calculator annotation or a plain
  equation in it ("12/6 = 2") is wrong, else the share of the operands of its expressions that are grounded, i.e. appear in the question, in an earlier
  step, or among a few unit constants (60 minutes, 100 percent, 12 a dozen...). A small model's typical slip is a
  quantity that is nowhere in the question (7 hours read as 8): this catches it without a second model.
- `JudgeScorer(generator)`: a process reward by prompting: any model (a local GGUF, a server's URL) is asked per
  step whether it is correct given the question and the steps before it; Yes scores 1, No 0. SPHERE uses a
  trained PRM (Qwen2.5-Math-PRM-7B); any OpenAI-compatible server that serves one as a chat model plugs in here.
"""
from __future__ import annotations

import re

from edgedistill.calculator import ANNOTATION, CalculatorError, evaluate, numbers_match
from edgedistill.formats import split_answer_reason
from edgedistill.records import Question

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(<])|\n+")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_OPERAND = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_NUM = r"\d[\d,]*(?:\.\d+)?"
PLAIN_EQUATION = re.compile(rf"(?<![\w.])({_NUM}(?:\s*[-+*/×x]\s*{_NUM})+)\s*=\s*({_NUM})")
WORD_NUMBERS = {"half": 0.5, "twice": 2, "double": 2, "triple": 3, "dozen": 12, "one": 1, "two": 2, "three": 3,
                "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                "twelve": 12, "quarter": 0.25, "third": 3, "hundred": 100, "thousand": 1000}
UNIT_CONSTANTS = {1, 2, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000, 3600}


def split_steps(text: str) -> list[str]:
    """The rationale's sentences (the whole text when it has no `Reason:` part)."""
    _, reason = split_answer_reason(text)
    body = reason or text
    return [step.strip() for step in _SENTENCE_END.split(body) if step.strip()]


def numbers_in(text: str) -> set[float]:
    found = {float(n.replace(",", "")) for n in _NUMBER.findall(text)}
    words = set(re.findall(r"[a-z]+", text.lower()))
    return found | {value for word, value in WORD_NUMBERS.items() if word in words}


def combine(step_scores: list[float]) -> dict:
    if not step_scores:
        return {"steps": [], "min": 0.0, "mean": 0.0}
    return {"steps": [round(s, 4) for s in step_scores], "min": round(min(step_scores), 4),
            "mean": round(sum(step_scores) / len(step_scores), 4)}


class GroundingScorer:
    name = "grounding"

    def score(self, question: Question, texts: list[str]) -> list[dict]:
        return [combine(self.step_scores(question, text)) for text in texts]

    def step_scores(self, question: Question, text: str) -> list[float]:
        known = numbers_in(question.question + " " + " ".join(question.options or [])) | UNIT_CONSTANTS
        scores = []
        for step in split_steps(text):
            # calculator annotations, and plain equations for teachers that skip the calculator ("12/6 = 2")
            equations = ANNOTATION.findall(step) + [(expr.replace("×", "*").replace("x", "*").replace(",", ""),
                                                     value.replace(",", ""))
                                                    for expr, value in PLAIN_EQUATION.findall(ANNOTATION.sub(" ", step))]
            operands, wrong = [], False
            for expr, value in equations:
                try:
                    result = evaluate(expr)
                except CalculatorError:
                    wrong = True
                    continue
                if value.strip() and not numbers_match(value.strip(), result):
                    wrong = True
                operands += [float(n) for n in _OPERAND.findall(expr)]
                known.add(result)
            if wrong:
                scores.append(0.0)
                continue
            grounded = sum(any(abs(o - k) < 1e-9 for k in known) for o in operands)
            scores.append(grounded / len(operands) if operands else 1.0)
            known |= numbers_in(ANNOTATION.sub(" ", step))   # numbers a step states are grounded from then on
        return scores


JUDGE_STEP_PROMPT = ("Question: {question}\n\nSteps so far:\n{before}\n\nNext step: {step}\n\n"
                     "Is the next step correct and useful for answering the question? Reply with Yes or No only.")


class JudgeScorer:
    name = "judge"

    def __init__(self, generator, batch_size: int = 16):
        self.generator, self.batch_size = generator, batch_size

    def score(self, question: Question, texts: list[str]) -> list[dict]:
        from edgedistill.generation import Sampling
        steps_per_text = [split_steps(text) for text in texts]
        prompts = [[{"role": "user", "content": JUDGE_STEP_PROMPT.format(
                       question=question.question, before="\n".join(steps[:i]) or "(none)", step=step)}]
                   for steps in steps_per_text for i, step in enumerate(steps)]
        replies = self.generator.generate(prompts, Sampling(max_new_tokens=3, stop_after_answer=False),
                                          batch_size=self.batch_size) if prompts else []
        verdicts = iter(1.0 if reply.strip().lower().startswith("yes") else 0.0 for reply in replies)
        return [combine([next(verdicts) for _ in steps]) for steps in steps_per_text]


class NoScorer:
    name = "none"

    def score(self, question: Question, texts: list[str]) -> list[dict]:
        return [{} for _ in texts]
