"""The calculator: GSM8K-style `<<expr=value>>` annotations, evaluated safely.

Small students cannot multiply, so they write the expression and the runtime writes the value. One evaluator
serves two uses:
- checking training data: every annotation in a rationale must evaluate to the value written after `=`;
- decoding: when a model has written an open `<<expr=`, `fill_for(text)` returns the text the runtime appends
  (`value>>`), and generation goes on from there. An unclosed or invalid expression is left as text.

The evaluator walks the AST of the expression: numbers, + - * / // % **, unary minus, parentheses and the
functions round, ceil, floor, min, max, abs, sqrt. No names, no attributes, no `eval`. Length, exponent and
magnitude are capped so a hostile or looping model cannot hang the process.
"""
from __future__ import annotations

import ast
import math
import operator
import re

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {"round": round, "ceil": math.ceil, "floor": math.floor, "min": min, "max": max, "abs": abs,
              "sqrt": math.sqrt}
# One annotation: `<<expr=value>>`. The value part may be empty in a prompt, never in training data.
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


class CalculatorError(ValueError):
    """The expression is not one the calculator evaluates (syntax, names, size, division by zero)."""


def evaluate(expr: str) -> float:
    """Value of an arithmetic expression, or CalculatorError. `x`, `×` and `÷` are read as * and /."""
    text = expr.strip().replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)   # thousands separators, not argument commas
    text = re.sub(r"(?<=[\d)])\s*x\s*(?=[\d(])", "*", text)
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {text!r}") from exc
    try:
        value = _walk(tree.body)
    except (ZeroDivisionError, OverflowError, TypeError) as exc:
        raise CalculatorError(f"{type(exc).__name__} in {text!r}") from exc
    if isinstance(value, complex) or math.isnan(value) or abs(value) > MAX_MAGNITUDE:
        raise CalculatorError(f"value out of range in {text!r}")
    return float(value)


def _walk(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
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
