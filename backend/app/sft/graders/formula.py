"""A multi grader's ``calculate_output``: arithmetic over the graders' scores, parsed with ``ast`` and
evaluated by walking the tree — only numbers, the graders' names, + - * / ** % and a few functions."""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
FUNCTIONS = {"min": min, "max": max, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
             "sqrt": math.sqrt, "log": math.log, "exp": math.exp}


class FormulaError(ValueError):
    """The formula cannot be parsed or uses what is not allowed; the message says what."""


def _parse(formula: str) -> ast.expr:
    try:
        return ast.parse(formula, mode="eval").body
    except SyntaxError as exc:
        raise FormulaError(f"not a formula ({exc.msg} at column {exc.offset})") from None


def check_formula(formula: str, names: set[str]) -> None:
    """Raise FormulaError unless ``formula`` uses only allowed syntax and the variables in ``names``."""
    _walk(_parse(formula), {name: 0.0 for name in names}, evaluate=False)


def evaluate(formula: str, scores: dict[str, float]) -> float:
    """The formula's value with ``scores`` as its variables (FormulaError for a math error, e.g. 1/0)."""
    try:
        value = float(_walk(_parse(formula), scores, evaluate=True))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise FormulaError(f"{type(exc).__name__}: {exc}") from None
    if not math.isfinite(value):
        raise FormulaError(f"the result is {value}")
    return value


def _walk(node: ast.AST, scores: dict[str, float], *, evaluate: bool) -> Any:
    def walk(child: ast.AST) -> Any:
        return _walk(child, scores, evaluate=evaluate)

    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in scores:
            raise FormulaError(f"unknown name {node.id!r} (the graders are: {', '.join(sorted(scores)) or 'none'})")
        return float(scores[node.id])
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = walk(node.left), walk(node.right)
        return _BINARY[type(node.op)](left, right) if evaluate else 0.0
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](walk(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords or not node.args:
            raise FormulaError(f"{node.func.id}() takes positional arguments only")
        args = [walk(arg) for arg in node.args]
        return float(FUNCTIONS[node.func.id](*args)) if evaluate else 0.0
    allowed = ", ".join(FUNCTIONS)
    raise FormulaError(f"{ast.unparse(node)!r} is not allowed: use numbers, the graders' names, + - * / ** % // "
                       f"and {allowed}")
