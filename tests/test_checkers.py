"""Answer checkers per answer type (right, wrong, malformed, missing), majority vote, CSV seeds."""
import pytest

from edgedistill import UserError
from edgedistill.checkers import Judge, canonical, extract_answer, is_correct, majority
from edgedistill.records import Question, load_questions


def q(answer=None, answer_type="number", options=None):
    return Question(id="x", question="How many?", answer=answer, answer_type=answer_type, options=options)


def test_numbers_with_tolerance_rounding_and_noise():
    assert is_correct("1,200", q("1200")) and is_correct("$1200.00", q("1200")) and is_correct("1200 parts", q("1200"))
    assert is_correct("83.79", q("83.8"))            # the reference's decimals decide the rounding
    assert not is_correct("83.7", q("83.8"))
    assert not is_correct("1201", q("1200"))
    assert not is_correct("many", q("1200"))         # malformed
    assert not is_correct(None, q("1200")) and not is_correct("5", q(None))   # missing either side


SENSORS = ["partial discharge", "resistance", "oil debris", "current", "voltage"]


def test_choice_letters_in_their_usual_spellings():
    question = q("D", "choice", SENSORS)
    for said in ("D", "(D)", "D) current", "d.", "current"):
        assert is_correct(said, question), said
    assert not is_correct("C", question)
    assert canonical("F", question) is None            # no sixth option: malformed
    assert canonical("a lot of current", question) is None   # prose is not the letter A


LABELS = ["Leaking", "Plugged / choked", "Structural deficiency", "Spurious stop"]


def test_labels_from_a_closed_set():
    question = q("Plugged / choked", "label", LABELS)
    assert is_correct("plugged/choked", question)
    assert is_correct("The failure mode is plugged / choked.", question)     # names exactly one label
    assert not is_correct("Leaking", question)
    assert canonical("Overheating", question) is None                        # not in the set
    assert canonical("leaking or plugged choked", question) is None          # names two labels: undecided


class ScriptedJudge:
    """A generator stand-in that answers Yes for one pair of phrasings and counts its calls."""
    backend = "scripted"

    def __init__(self):
        self.calls = 0

    def generate(self, conversations, sampling, batch_size=16, progress=None):
        self.calls += len(conversations)
        return ["Yes" if "replace the seal" in c[-1]["content"].lower() and "new seal" in c[-1]["content"] else "No"
                for c in conversations]


def test_free_text_goes_through_the_judge_once_per_distinct_answer():
    question = q("Replace the seal", "text")
    generator = ScriptedJudge()
    judge = Judge(generator)
    assert is_correct("replace the seal.", question, judge) and generator.calls == 0    # equal after normalising
    assert is_correct("Fit a new seal", question, judge) and generator.calls == 1
    assert is_correct("Fit a new seal", question, judge) and generator.calls == 1       # remembered
    assert not is_correct("Tighten the bolts", question, judge)
    assert not is_correct("Fit a new seal", question)                                  # no judge: exact only


def test_majority_counts_invalid_answers_in_k_and_breaks_ties_by_order():
    assert majority(["12", "12.0", "13", None], q()) == ("12", 0.5)
    assert majority(["13", "12", "12", "13"], q()) == ("13", 0.5)          # tie: the first seen wins
    assert majority([None, "x", None], q()) == (None, 0.0)
    assert majority(["b)", "B", "current", "A"], q(None, "choice", SENSORS)) == ("B", 0.5)


def test_extract_answer_reads_the_answer_line_per_type():
    assert extract_answer("Answer: <<6*7=42>>\nReason: x") == "42"
    assert extract_answer("Answer: B) current.\nReason: x", "choice") == "B) current"
    # a label without an Answer line: the last line, read as a label only when it names exactly one
    labels = Question(id="w", question="?", answer="Leaking", answer_type="label", options=["Leaking", "Breakdown"])
    assert canonical(extract_answer("The seal is worn.\nFailure mode: leaking.", "label"), labels) == "Leaking"
    assert canonical(extract_answer("no answer line", "label"), labels) is None
    assert extract_answer("", "label") is None


def test_csv_seeds_with_only_a_question_column(tmp_path):
    path = tmp_path / "plant.csv"
    path.write_text("question\nHow many bolts per flange?\n\n\"Line A, running 3 shifts: output?\"\n")
    questions = load_questions(path, need_answers=False)
    assert [x.question for x in questions] == ["How many bolts per flange?", "Line A, running 3 shifts: output?"]
    assert questions[0].answer is None and questions[0].id == "plant-2"
    with pytest.raises(UserError, match="missing field 'answer'"):
        load_questions(path)


def test_csv_with_options_and_bad_headers(tmp_path):
    path = tmp_path / "mc.csv"
    path.write_text("id,question,answer,answer_type,options\nm1,Which sensor?,D,choice,partial discharge|resistance|oil debris|current\n")
    (question,) = load_questions(path)
    assert question.options[3] == "current" and is_correct("current", question)
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,answer\nWhat?,1\n")
    with pytest.raises(UserError, match=r"bad.csv:1: the header has no 'question' column"):
        load_questions(bad)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("question\nWie viele Maße?\n".encode("latin-1"))
    with pytest.raises(UserError, match="must be UTF-8"):
        load_questions(latin, need_answers=False)
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(b'{"question": "ok", "answer": "1"}\n' + '{"question": "Maße"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.jsonl:2: not UTF-8"):
        load_questions(jsonl, need_answers=False)
