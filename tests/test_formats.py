from edgedistill.checkers import extract_answer, is_correct
from edgedistill.formats import INSTRUCTION, answer_first_target, chat, clean_rationale, split_answer_reason
from edgedistill.records import Question, question_from_dict


def q(**kw):
    return Question(id="x", question="How many?", **kw)


def test_answer_first_target_puts_answer_before_reason_and_does_not_repeat_value():
    target = answer_first_target(q(answer="450", answer_expr="60*7.5", rationale="60 an hour for 7.5 h: <<60*7.5=450>>450 parts."))
    assert target == "Answer: <<60*7.5=450>>\nReason: 60 an hour for 7.5 h: <<60*7.5=450>> parts."
    assert target.index("Answer:") < target.index("Reason:")


def test_answer_first_target_without_expression_or_rationale():
    assert answer_first_target(q(answer="B", answer_type="choice")) == "Answer: B"
    assert answer_first_target(q(answer="12", rationale="Half of\n24 is 12.")) == "Answer: 12\nReason: Half of 24 is 12."


def test_a_choice_answer_line_carries_its_option_and_still_scores_as_its_letter():
    lettered = q(answer="D", answer_type="choice", options=["A. voltage", "B. oil debris", "C. power", "D. current"])
    assert answer_first_target(lettered) == "Answer: D. current"
    bare = q(answer="b", answer_type="choice", options=["pump", "vibration"])
    assert answer_first_target(bare, rationale="Wear shakes.") == "Answer: B. vibration\nReason: Wear shakes."
    assert is_correct(extract_answer(answer_first_target(lettered), lettered), lettered)
    assert not is_correct("A. voltage", lettered)
    out_of_range = q(answer="F", answer_type="choice", options=["A. voltage", "B. current"])
    assert answer_first_target(out_of_range) == "Answer: F"     # nothing to attach: left as written


def test_clean_rationale_strips_gsm8k_repeated_values_only():
    assert clean_rationale("She sold <<48/2=24>>24 clips and <<48+24=72>>72 in all.") == \
        "She sold <<48/2=24>> clips and <<48+24=72>> in all."
    assert clean_rationale("Made <<2*3=6>> 60 more.") == "Made <<2*3=6>> 60 more."


def test_extract_answer_reads_the_filled_answer_line():
    assert extract_answer("Answer: <<60*7.5=450>>\nReason: 12 and 13") == "450"
    assert extract_answer("Answer: 42 parts\nReason: 7") == "42"
    assert extract_answer("Answer: <<6*7=>>") == "42"            # unfilled: evaluated
    assert extract_answer("I think it is 5, no, 7.") == "7"       # no Answer line: last number
    assert extract_answer("Answer: B) Leaking", "choice") == "B) Leaking"
    assert extract_answer("nothing here") is None


def test_is_correct():
    assert is_correct("450", q(answer="450"))
    assert is_correct("83.79", q(answer="83.8"))
    assert not is_correct("451", q(answer="450"))
    assert is_correct("b", q(answer="B", answer_type="choice"))
    assert is_correct("leaking", q(answer="Leaking", answer_type="label"))
    assert not is_correct(None, q(answer="1"))


def test_chat_has_instruction_as_system_then_shots():
    shot = q(answer="2", answer_expr="1+1")
    messages = chat(q(answer="3"), [(shot, "Answer: <<1+1=2>>")])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == INSTRUCTION


def test_split_answer_reason():
    assert split_answer_reason("Answer: <<2*3=6>>\nReason: two threes") == ("<<2*3=6>>", "two threes")


def test_gsm8k_style_question():
    parsed = question_from_dict({"question": "Q?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}, "f:1", "f-1")
    assert parsed.answer == "7" and parsed.rationale == "3 + 4 = <<3+4=7>>7"
    assert question_from_dict({"question": "Q?", "answer": 1200}, "f:1", "f-1").answer == "1200"
