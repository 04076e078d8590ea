"""How an answer reads as an option letter or as one label of a closed set: the rules the checker grades by and the
data loader checks a reference against, in one module that both import (the loader sits below the checker)."""
from __future__ import annotations

import re

OPTION_LETTER = re.compile(r"^\(?[A-Z][).:]\s*")   # "A. partial discharge": options may carry their letter
LETTER = re.compile(r"^\(?(?:([A-Z])(?:[).:\s]|$)|([a-z])(?:[).:]|$))")   # "B", "(B)", "b." but not "a lot"


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped: how answers, labels and n-grams are compared."""
    return re.sub(r"[^\w]+", " ", str(text).lower()).split()


def said(text: str) -> str:
    return " ".join(words(text))


def choice_letter(answer: str, options: list[str]) -> str | None:
    """The option letter an answer names: a letter within the options ("B", "(B)", "b."), or one option's text
    with or without its letter; None otherwise. Without options, any letter."""
    match = LETTER.match(answer)
    letter = (match.group(1) or match.group(2)).upper() if match else None
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if letter and (not letters or letter in letters):
        return letter
    for letter, option in zip(letters, options):
        if said(answer) in (said(option), said(OPTION_LETTER.sub("", option))):
            return letter
    return None


def label_of(answer: str, labels: list[str]) -> str | None:
    """The label an answer names: its words equal one label's, or it names exactly one of them; without labels,
    its words; None otherwise."""
    words_said = said(answer)
    by_words = {said(label): label for label in labels}
    if not by_words:
        return words_said or None
    if words_said in by_words:
        return by_words[words_said]
    named = [label for text, label in by_words.items() if re.search(rf"\b{re.escape(text)}\b", words_said)]
    return named[0] if len(named) == 1 else None
