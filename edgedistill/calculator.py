"""The calculator: GSM8K-style `<<expr=value>>` annotations, evaluated safely.

Small students cannot multiply, so they write the expression and the runtime writes the value. One evaluator
serves two uses:
- checking training data: every annotation in a rationale must evaluate to the value written after `=`;
- decoding: when a model has written an open `<<expr=`, `fill_for(text)` returns the text the runtime appends
  (`value>>`), and generation goes on from there. An unclosed or invalid expression is left as text.

The evaluator walks the AST of the expression: numbers, + - * / // % **, unary minus, parentheses and the
functions round, ceil, floor, min, max, abs, sqrt. No names, no attributes, no `eval`. Length, exponent,
magnitude and round's digits are capped so a hostile or looping model cannot hang the process, and any failure
(syntax, domain, recursion, memory) is a CalculatorError: a rationale the calculator cannot value stays text, it
never ends a run.
"""
from __future__ import annotations

import ast
import math
import operator
import re

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15
MAX_ROUND_DIGITS = 15      # round(5, -10**12) would compute 10**(10**12)

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {"round": round, "ceil": math.ceil, "floor": math.floor, "min": min, "max": max, "abs": abs,
              "sqrt": math.sqrt}
# One annotation: `<<expr=value>>`. The value part may be empty in a prompt, never in training data.
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# `0x10`, `0o17`, `0b101`: Python reads them in another base, and `x` is also read as multiplication (0x10 = 0*10),
# so either reading may be what the model meant; such a literal is refused rather than valued at a guess.
RADIX_LITERAL = re.compile(r"(?<![\d.])0[xXoObB][0-9a-fA-F]")
TIMES_X = re.compile(r"(?<=[\d)])\s*x\s*(?=[\d(])")
# A number written with thousands separators: 1,200 or 12,345,678.5 (groups of exactly three digits).
GROUPED_NUMBER = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?!\d)")
CALL_OPENING = re.compile(r"[A-Za-z_]\w*\s*$")


class CalculatorError(ValueError):
    """The expression is not one the calculator evaluates (syntax, names, size, division by zero)."""


def evaluate(expr: str) -> float:
    """Value of an arithmetic expression, or CalculatorError (and no other exception). `x`, `×` and `÷` are read
    as * and /, and `1,200` as 1200 except between a function's parentheses, where commas separate arguments."""
    try:
        return _evaluate(expr)
    except CalculatorError:
        raise
    except Exception as exc:   # math domain (sqrt(-1)), RecursionError, MemoryError...: not a value either
        raise CalculatorError(f"{type(exc).__name__} in {str(expr)[:MAX_EXPR_CHARS]!r}: {exc}") from exc


def _evaluate(expr: str) -> float:
    text = expr.strip().replace("×", "*").replace("÷", "/")
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPR_CHARS:    # checked first, so the rewriting below never runs on a huge text
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    if RADIX_LITERAL.search(text):
        raise CalculatorError(f"{text!r}: 0x/0o/0b literals are ambiguous (another base, or x for times)")
    text = drop_thousands_separators(TIMES_X.sub("*", text))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {text!r}") from exc
    value = _walk(tree.body)
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise CalculatorError(f"value out of range in {text!r}")
    return float(value)


def drop_thousands_separators(text: str) -> str:
    """`1,200/4` -> `1200/4`, but `max(10,250,4)` keeps its commas: directly inside a call's parentheses a comma
    separates arguments, so only numbers outside calls (or in plain parentheses within one) are regrouped."""
    in_call = _in_call_arguments(text)
    return GROUPED_NUMBER.sub(lambda m: m.group() if in_call[m.start()] else m.group().replace(",", ""), text)


def _in_call_arguments(text: str) -> list[bool]:
    """Per character: is its innermost enclosing parenthesis a function call's (`max(`, not `(` or `2*(`)?"""
    calls: list[bool] = []       # one entry per open parenthesis: does it open a call?
    inside = []
    for i, char in enumerate(text):
        inside.append(bool(calls) and calls[-1])
        if char == "(":
            calls.append(bool(CALL_OPENING.search(text, 0, i)))
        elif char == ")" and calls:
            calls.pop()
    return inside


def _walk(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if not math.isfinite(node.value) or abs(node.value) > MAX_MAGNITUDE:   # 1e999 is inf, then nan
            raise CalculatorError(f"number {node.value} out of range")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > MAX_MAGNITUDE):
            raise CalculatorError(f"exponent {right} too large (limit {MAX_EXPONENT})")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise CalculatorError("intermediate value out of range")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and 1 <= len(node.args) <= 8):
        args = [_walk(arg) for arg in node.args]
        if node.func.id == "round" and len(args) == 2:
            args[1] = int(args[1])
            if abs(args[1]) > MAX_ROUND_DIGITS:
                raise CalculatorError(f"round to {args[1]} digits (limit {MAX_ROUND_DIGITS})")
        return _FUNCTIONS[node.func.id](*args)
    raise CalculatorError(f"not allowed in an expression: {ast.dump(node)[:60]}")


def format_number(value: float) -> str:
    """The text the calculator writes: integers bare, others to at most 4 decimals, no trailing zeros."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def open_expression(text: str) -> str | None:
    """The expression of an annotation the text has just opened and not yet valued (`...<<expr=`), else None."""
    start = text.rfind("<<")
    if start < 0 or not text.endswith("=") or ">>" in text[start:]:
        return None
    expr = text[start + 2:-1]
    return expr if "=" not in expr else None


def fill_for(text: str) -> str | None:
    """What the runtime appends after `text` (`value>>`), or None when nothing is to be filled in."""
    expr = open_expression(text)
    if expr is None:
        return None
    try:
        return format_number(evaluate(expr)) + ">>"
    except CalculatorError:
        return None


def check_annotations(text: str) -> list[str]:
    """Problems with the annotations of a training text; empty when every `<<expr=value>>` is right."""
    problems = []
    for expr, written in ANNOTATION.findall(text):
        try:
            value = evaluate(expr)
        except CalculatorError as exc:
            problems.append(f"<<{expr}={written}>>: {exc}")
            continue
        if not numbers_match(written, value):
            problems.append(f"<<{expr}={written}>>: evaluates to {format_number(value)}")
    return problems


def numbers_match(reference: str | float, value: float, rel_tol: float = 1e-4) -> bool:
    """True when `value` agrees with `reference` to the reference's decimals, or within a relative 1e-4."""
    try:
        ref = float(str(reference).replace(",", "").strip())
    except ValueError:
        return False
    decimals = len(str(reference).split(".")[1]) if "." in str(reference) else 0
    if round(value, decimals) == round(ref, decimals):
        return True
    return math.isclose(value, ref, rel_tol=rel_tol, abs_tol=1e-9)
