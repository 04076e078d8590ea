import pytest

from edgedistill.calculator import (CalculatorError, check_annotations, evaluate, fill_for, format_number,
                                    numbers_match, open_expression)


@pytest.mark.parametrize("expr,value", [
    ("60*7.5", 450.0), ("(1200-36)/1200*100", 97.0), ("((2+3)*(4-1))/5", 3.0), ("2**10", 1024.0),
    ("-3+5", 2.0), ("round(10/3, 2)", 3.33), ("ceil(7/2)", 4.0), ("floor(7/2)", 3.0), ("max(3, 9, 4)", 9.0),
    ("12 x 4", 48.0), ("1,200/4", 300.0), ("7 % 3", 1.0), ("sqrt(16)", 4.0),
])
def test_valid_expressions(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr", [
    "__import__('os')", "a+1", "open('x')", "(1).real", "2**1000", "9**9**9", "1/0", "", "lambda: 1",
    "[1, 2]", "'a'*3", "1" * 300, "10**20",
])
def test_invalid_expressions_raise(expr):
    with pytest.raises(CalculatorError):
        evaluate(expr)


def test_format_number():
    assert format_number(450.0) == "450"
    assert format_number(83.79000001) == "83.79"
    assert format_number(1 / 3) == "0.3333"
    assert format_number(-0.00001) == "0"


def test_fill_for_open_annotation():
    assert fill_for("Answer: <<60*7.5=") == "450>>"
    assert fill_for("Answer: <<(2+3)*(4-(1+1))=") == "10>>"


def test_fill_for_leaves_invalid_and_closed_as_text():
    assert fill_for("Answer: <<2**999=") is None          # huge exponent
    assert fill_for("Answer: <<a+b=") is None              # not arithmetic
    assert fill_for("Answer: <<6*7=42>> and then =") is None   # already closed
    assert fill_for("Answer: <<6*7") is None               # unclosed, no '=' yet
    assert fill_for("x = ") is None
    assert open_expression("<<1=2=") is None


def test_check_annotations():
    assert check_annotations("It makes <<60*7.5=450>> parts and <<10/4=2.5>> more.") == []
    problems = check_annotations("Total <<3*4=13>> and <<1/0=1>>.")
    assert len(problems) == 2 and "evaluates to 12" in problems[0] and "ZeroDivision" in problems[1]


def test_numbers_match_uses_reference_decimals():
    assert numbers_match("83.79", 83.7912)
    assert numbers_match("84", 84.0)
    assert not numbers_match("84", 84.6)
    assert numbers_match("1000000", 1000000.5)   # relative 1e-4
    assert not numbers_match("abc", 1.0)
