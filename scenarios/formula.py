"""The language of a ``[[claim]]``'s formula, checked without evaluating it.

A formula is one NumPy-style expression over the scenario's quantities
(docs/textbook.md#claims)::

    delta[2].T @ a[1]                      # ∂L/∂W² = δ³ (a²)ᵀ, batch-first rows
    sum(delta[2], axis=0)                  # ∂L/∂b² = Σₙ δ³
    (a[3] - y) * a[3] * (1 - a[3])         # δ = (a − t) σ'(z)

This module only parses it (``ast.parse``, mode ``eval``) and walks the tree
iteratively: the text is bounded (``MAX_LENGTH``) before it is parsed, the tree
is bounded in depth (``MAX_DEPTH``), and every node must be one of the few the
language has — numbers, the quantity names, the functions, arithmetic, ``@``,
comparisons, ``.T`` and subscripts by literal integers and slices. No
attribute but ``.T``, no call of anything but a listed function, no strings,
lists, lambdas, comprehensions or keywords except ``axis``. The evaluator
(``reports.textbook.claims``) runs only trees this check accepted, and adds
the guards that need values: the size of every intermediate array and the
exponent of ``**``.
"""
from __future__ import annotations

import ast

# The quantities, read from a Trace (reports.textbook.claims.quantities).
NAMES = {
    "x": "the input data.x, (N, …)",
    "y": "the targets data.y",
    "t": "the targets data.y (the seeds' t)",
    "n": "the batch size N",
}
# Families indexed by a layer number (counting from 0 in file order, activations included; -1 the last).
FAMILIES = {
    "W": "layer i's weight (out, in) — linear, conv2d, γ of a norm",
    "b": "layer i's bias (out,)",
    "z": "layer i's output, (N, …) (z of a linear layer)",
    "a": "layer i's output (the same as z[i]; a of an activation)",
    "delta": "∂L/∂(layer i's output), (N, …); δ for a linear layer",
}
# name -> (number of positional arguments accepted, keywords accepted)
FUNCTIONS = {
    "exp": ((1,), ()), "log": ((1,), ()), "tanh": ((1,), ()), "sigmoid": ((1,), ()),
    "softmax": ((1,), ()), "sqrt": ((1,), ()), "abs": ((1,), ()), "sign": ((1,), ()),
    "T": ((1,), ()), "outer": ((2,), ()), "maximum": ((2,), ()), "minimum": ((2,), ()),
    "where": ((3,), ()), "sum": ((1,), ("axis",)), "mean": ((1,), ("axis",)),
}

MAX_LENGTH = 1000   # characters of one formula
MAX_DEPTH = 100     # nesting of the parsed expression
MAX_EXPONENT = 100  # |p| in u ** p
MAX_INDEX = 2**31   # a literal subscript

_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult)
_UNARY = (ast.USub, ast.UAdd)
_COMPARE = (ast.Gt, ast.GtE, ast.Lt, ast.LtE, ast.Eq, ast.NotEq)
_SYMBOL = {ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
           ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~", ast.Not: "not", ast.Is: "is", ast.IsNot: "is not",
           ast.In: "in", ast.NotIn: "not in"}


class FormulaError(ValueError):
    """A formula that cannot be evaluated: the message says why (the loader adds file and field)."""


def family_index(node: ast.expr) -> int | None:
    """The literal integer of a subscript (``2``, ``-1``), or None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = family_index(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) <= MAX_INDEX:
        return node.value
    return None


def parse_formula(text: str, layer_count: int | None = None, has=None) -> ast.Expression:
    """The parsed formula, or a ``FormulaError`` saying what is not allowed.

    ``layer_count`` and ``has(family, layer) -> str | None`` (a problem, e.g.
    "layer 1 is 'sigmoid', which has no weight") check the layer numbers of
    ``W[i]``, ``b[i]``, ``z[i]``, ``a[i]``, ``delta[i]`` against the scenario.
    """
    if not isinstance(text, str):
        raise FormulaError("expected a string")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"is {len(text):,} characters long; expected at most {MAX_LENGTH:,}")
    if not text.strip():
        raise FormulaError("is empty; expected an expression such as \"delta[2].T @ a[1]\"")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FormulaError(f"is not an expression: {err.msg}"
                           + (f" (column {err.offset})" if err.offset else "")) from None
    except (RecursionError, MemoryError, ValueError) as err:
        raise FormulaError(f"cannot be parsed ({type(err).__name__}: nested too deeply or too large)") from None
    _check_tree(tree.body, layer_count, has)
    return tree


def _check_tree(root: ast.AST, layer_count: int | None, has) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FormulaError(f"is nested more than {MAX_DEPTH} levels deep; expected a shorter expression")
        children = _check_node(node, layer_count, has)
        stack += [(child, depth + 1) for child in children]


def _check_node(node: ast.AST, layer_count: int | None, has) -> list[ast.AST]:
    """The children to check next; raises on a node the language does not have."""
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise FormulaError(f"{_constant_kind(node.value)} is not allowed; expected numbers, quantities "
                               "and functions only")
        return []
    if isinstance(node, ast.Name):
        if node.id in FAMILIES:
            raise FormulaError(f"{node.id} needs a layer number: {node.id}[i] (e.g. {node.id}[0])")
        if node.id in FUNCTIONS:
            raise FormulaError(f"{node.id} is a function; expected a call {node.id}(…)")
        if node.id not in NAMES:
            raise FormulaError(f"unknown name {node.id!r}; expected one of: {_vocabulary()}")
        return []
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINARY):
            raise FormulaError(f"the operator {_SYMBOL.get(type(node.op), type(node.op).__name__)} is not allowed; "
                               "expected + - * / ** @")
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            raise FormulaError(f"the operator {_SYMBOL.get(type(node.op), type(node.op).__name__)} is not allowed; "
                               "expected - or +")
        return [node.operand]
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            raise FormulaError("chained comparisons (a < b < c) are not allowed; expected one comparison")
        if not isinstance(node.ops[0], _COMPARE):
            raise FormulaError(f"the comparison {_SYMBOL.get(type(node.ops[0]), '?')} is not allowed; "
                               "expected > >= < <= == !=")
        return [node.left, node.comparators[0]]
    if isinstance(node, ast.Attribute):
        if node.attr != "T":
            raise FormulaError(f"attribute access (.{node.attr}) is not allowed; expected only .T (the transpose)")
        return [node.value]
    if isinstance(node, ast.Call):
        return _check_call(node)
    if isinstance(node, ast.Subscript):
        return _check_subscript(node, layer_count, has)
    raise FormulaError(f"{_node_kind(node)} is not allowed; expected numbers, quantities "
                       f"({_vocabulary()}), arithmetic, @, comparisons, .T and subscripts")


def _check_call(node: ast.Call) -> list[ast.AST]:
    if isinstance(node.func, ast.Attribute):
        raise FormulaError(f"attribute access (.{node.func.attr}) is not allowed: no method calls; expected a "
                           f"function call such as sum(x), one of: {', '.join(FUNCTIONS)}")
    if not isinstance(node.func, ast.Name):
        raise FormulaError("only the listed functions can be called, by name; expected one of: "
                           + ", ".join(FUNCTIONS))
    name = node.func.id
    if name not in FUNCTIONS:
        raise FormulaError(f"unknown function {name!r}; expected one of: {', '.join(FUNCTIONS)}")
    counts, keywords = FUNCTIONS[name]
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise FormulaError(f"{name}(*…) is not allowed")
    if len(node.args) not in counts:
        raise FormulaError(f"{name} takes {' or '.join(map(str, counts))} argument(s), got {len(node.args)}")
    children = list(node.args)
    for keyword in node.keywords:
        if keyword.arg not in keywords:
            allowed = f"expected only {', '.join(k + '=' for k in keywords)}" if keywords else "it takes none"
            raise FormulaError(f"{name}: the keyword {(keyword.arg or '**') + '='} is not allowed; {allowed}")
        if keyword.arg == "axis":
            _check_axis(keyword.value, name)
    return children


def _check_axis(node: ast.AST, name: str) -> None:
    parts = node.elts if isinstance(node, ast.Tuple) else [node]
    if not parts or any(family_index(part) is None for part in parts):
        raise FormulaError(f"{name}: axis must be a literal integer or a tuple of them (axis=0, axis=(0, 1))")


def _check_subscript(node: ast.Subscript, layer_count: int | None, has) -> list[ast.AST]:
    if isinstance(node.value, ast.Name) and node.value.id in FAMILIES:
        family = node.value.id
        layer = family_index(node.slice)
        if layer is None:
            raise FormulaError(f"{family}[…] takes a literal layer number, e.g. {family}[0]")
        if layer_count is not None:
            if not -layer_count <= layer < layer_count:
                raise FormulaError(f"{family}[{layer}]: no layer {layer}; expected a layer number from 0 to "
                                   f"{layer_count - 1} (or -1 for the last)")
            problem = has(family, layer % layer_count) if has else None
            if problem:
                raise FormulaError(f"{family}[{layer}]: {problem}")
        return []
    parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    for part in parts:
        if isinstance(part, ast.Slice):
            bounds = [b for b in (part.lower, part.upper, part.step) if b is not None]
            if any(family_index(b) is None for b in bounds):
                raise FormulaError("a slice takes literal integers (u[0:2], u[:, 1]); expected no expression there")
        elif family_index(part) is None:
            raise FormulaError("a subscript takes literal integers and slices (u[0, 1], u[:, 0]); "
                               "expected no expression there")
    return [node.value]


def _vocabulary() -> str:
    return ", ".join([*NAMES, *(f"{f}[i]" for f in FAMILIES)])


def _constant_kind(value) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "bytes"
    if value is None:
        return "None"
    if value is Ellipsis:
        return "..."
    if isinstance(value, bool):
        return f"{value}"
    return f"a {type(value).__name__} ({value!r})"


def _node_kind(node: ast.AST) -> str:
    kinds = {ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
             ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator", ast.List: "a list",
             ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set", ast.IfExp: "if … else",
             ast.BoolOp: "and / or", ast.NamedExpr: "assignment (:=)", ast.JoinedStr: "an f-string",
             ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.Starred: "*…",
             ast.Slice: "a slice outside a subscript"}
    return kinds.get(type(node), type(node).__name__)
