import subprocess
import sys

import pytest

from edgedistill import calculator
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


@pytest.mark.parametrize("expr,value", [
    ("max(10,250,4)", 250.0), ("min(1,200, 3)", 1.0), ("max((1,200), 5)", 1200.0), ("1,200/4", 300.0),
    ("2*(1,200)", 2400.0), ("12x1,200", 14400.0), ("1,200.5+1", 1201.5), ("3 × 1,000,000", 3e6),
])
def test_thousands_separators_are_not_read_in_argument_lists(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr", ["0x10", "0X10", "2*0x1f", "0o17", "0b101", "(0x10)"])
def test_hex_octal_binary_literals_are_refused_not_misread(expr):
    with pytest.raises(CalculatorError, match="ambiguous"):
        evaluate(expr)
    assert evaluate("10x10") == 100 and evaluate("0 x 10") == 0     # `x` between numbers is still times


@pytest.mark.parametrize("expr", [
    "sqrt(-1)", "floor(1e999)", "ceil(1e999-1e999)", "round(2.5, 10**9)", "round(1,2,3)",
    "max()", "\x00", "1,2000", "1234,567",
])
def test_every_failure_is_a_calculator_error(expr):
    with pytest.raises(CalculatorError):
        evaluate(expr)


def test_huge_round_digits_are_refused_at_once():
    """round(5, -10**12) would compute 10**(10**12); run in a child process, so a hang fails instead of hanging."""
    code = ("from edgedistill.calculator import CalculatorError, evaluate\n"
            "try:\n    evaluate('round(5, -10**12)')\nexcept CalculatorError as exc:\n    print('refused:', exc)")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("round(5, -10**12) still running after 60 s")
    assert done.stdout.startswith("refused: round to -1000000000000 digits"), done.stderr


def test_recursion_error_is_a_calculator_error():
    depth, frame = 0, sys._getframe()
    while frame:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 60)     # a deep caller: the walk over 150 nested minus signs overflows it
    try:
        with pytest.raises(CalculatorError, match="RecursionError"):
            evaluate("-" * 150 + "1")
    finally:
        sys.setrecursionlimit(limit)


def test_unexpected_errors_are_calculator_errors(monkeypatch):
    def out_of_memory(*args):
        raise MemoryError
    monkeypatch.setitem(calculator._FUNCTIONS, "abs", out_of_memory)
    with pytest.raises(CalculatorError, match="MemoryError"):
        evaluate("abs(2)")


def test_domain_errors_leave_the_rationale_as_text():
    assert fill_for("Answer: <<sqrt(-1)=") is None
    assert fill_for("Answer: <<max(10,250,4)=") == "250>>"
    problems = check_annotations("It is <<sqrt(-1)=1>> and <<floor(1e999)=1>> and <<max(10,250,4)=250>>.")
    assert len(problems) == 2 and "sqrt(-1)" in problems[0]


def test_decode_row_survives_a_math_domain_error():
    from edgedistill.generation import Row, Sampling
    text = "Answer: <<sqrt(-1)="
    row = Row(Sampling(max_new_tokens=64, stop_after_answer=False), decode=lambda ids: "".join(map(chr, ids)),
              encode=lambda s: [ord(c) for c in s], eos={0})
    fed = [row.step(ord(char)) for char in text]
    assert None not in fed and row.queue == [] and row.text == text     # nothing forced; the model goes on
