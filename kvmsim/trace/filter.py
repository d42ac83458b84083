"""Event selection for `kvmsim trace`: -e NAME (globs, as trace-cmd -e) and --filter on fields.

The filter grammar is ftrace's (Documentation/trace/events.rst "Event filtering"):
`field OP value` with ==, !=, <, <=, >, >=, & and ~ (glob on strings), joined by &&, ||, !
and parentheses, e.g. `port == 0x3f8 && rw == 1` or `reason ~ "KVM_EXIT_*"`.  An event that
lacks a field the expression names does not match (ftrace refuses such a filter per event).
"""

from __future__ import annotations

import ast
import fnmatch
import re
from typing import Any

from kvmsim.errors import ScenarioError
from kvmsim.kvm.trace import TRACE_EVENTS

_TOKENS = re.compile(r'\s*(?:(?P<num>0x[0-9a-fA-F]+|\d+)|(?P<str>"[^"]*"|\'[^\']*\')|(?P<name>[A-Za-z_]\w*)'
                     r'|(?P<op>&&|\|\||==|!=|<=|>=|<|>|~|&|!|\(|\)))')
_PY_OP = {"&&": " and ", "||": " or ", "!": " not ", "~": " in "}   # `in` stands for the glob match


class BadFilter(ScenarioError):
    def __init__(self, expr: str, why: str) -> None:
        super().__init__("--filter", None, f"bad filter {expr!r}: {why}")


class _Missing(Exception):
    pass


def compile_filter(expr: str) -> ast.Expression:
    """Tokenise the ftrace expression and rebuild it as a Python expression tree we walk ourselves."""
    out, pos = [], 0
    while pos < len(expr.rstrip()):
        m = _TOKENS.match(expr, pos)
        if m is None or m.end() == pos:
            raise BadFilter(expr, f"unexpected text at column {pos + 1}")
        pos = m.end()
        tok = m.group(m.lastgroup)   # type: ignore[arg-type]
        out.append(_PY_OP.get(tok, tok) if m.lastgroup == "op" else tok)
    try:
        tree = ast.parse(" ".join(out).strip(), mode="eval")
    except SyntaxError:
        raise BadFilter(expr, "not a filter expression") from None
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Expression, ast.BoolOp, ast.UnaryOp, ast.Compare, ast.BinOp, ast.Name,
                                 ast.Constant, ast.And, ast.Or, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE,
                                 ast.Gt, ast.GtE, ast.In, ast.BitAnd, ast.Load)):
            raise BadFilter(expr, f"{type(node).__name__} is not allowed")
    return tree


def matches(tree: ast.Expression, fields: dict[str, Any]) -> bool:
    try:
        return bool(_eval(tree.body, fields))
    except _Missing:
        return False


def _eval(node: ast.AST, f: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in f or f[node.id] is None:
            raise _Missing(node.id)
        v = f[node.id]
        return int(v) if isinstance(v, bool) else v
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, f) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.UnaryOp):
        return not _eval(node.operand, f)
    if isinstance(node, ast.BinOp):
        return _eval(node.left, f) & _eval(node.right, f)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, f)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, f)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    raise _Missing(type(node).__name__)


_CMP = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
        ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}


def _compare(op: ast.cmpop, a: Any, b: Any) -> bool:
    """Numbers compare as numbers; anything else as its text (bytes as hex), `~` as a glob."""
    if isinstance(a, (bytes, bytearray)):
        a = a.hex()
    if isinstance(op, ast.In):
        return fnmatch.fnmatchcase(str(a), str(b))
    if not (isinstance(a, int) and isinstance(b, int)):
        a, b = str(a), str(b)
    return bool(_CMP[type(op)](a, b))


class EventFilter:
    """-e globs (none: every event) and an optional --filter expression.

    As trace-cmd does, a name that matches no kvm tracepoint and a filter on a field that none
    of the selected events has are errors (a typo would otherwise print nothing)."""

    def __init__(self, events: list[str] | None = None, expr: str | None = None) -> None:
        self.events = [e.split(":", 1)[-1] for e in events or []]   # `kvm:kvm_exit` as well as `kvm_exit`
        for glob in self.events:
            if not any(fnmatch.fnmatchcase(name, glob) for name in TRACE_EVENTS):
                raise ScenarioError("-e", None, f"no kvm tracepoint matches {glob!r}; "
                                                f"known: {', '.join(TRACE_EVENTS)}")
        self.tree = compile_filter(expr) if expr else None
        if self.tree is not None:
            selected = [tp for name, tp in TRACE_EVENTS.items()
                        if not self.events or any(fnmatch.fnmatchcase(name, g) for g in self.events)]
            known = {f for tp in selected for f in tp.fields}
            unknown = sorted({n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)} - known)
            if unknown:
                raise BadFilter(expr or "", f"no selected event has the field {', '.join(unknown)} "
                                            f"(fields: {', '.join(sorted(known))})")

    def __call__(self, event: str, fields: dict[str, Any]) -> bool:
        if self.events and not any(fnmatch.fnmatchcase(event, g) for g in self.events):
            return False
        return self.tree is None or matches(self.tree, fields)
