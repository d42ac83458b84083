"""Load scenario YAML files into `Scenario` models; every mistake becomes ScenarioError(file, line, msg).

The YAML is composed once into nodes (which carry line marks), the line of every mapping key
and sequence item is recorded under its path, and then the document is constructed and
validated.  A pydantic error's `loc` is mapped back through that table to the line of the
offending field; union tags and other loc parts that are not YAML keys are skipped.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from kvmsim.errors import ScenarioError
from kvmsim.scenario.schema import FieldError, Scenario

Loc = tuple[str, ...]
VALUE = "<value>"  # lines[loc + (VALUE,)]: the line a scalar value's text starts on
MAX_REPORTED = 6  # errors listed per file, so the message fits on one screen
# Bounds on hostile input (the largest shipped scenario is a few KiB, a few hundred nodes, depth < 10).
MAX_BYTES = 1 << 20  # a scenario file is read whole; larger is refused before parsing
MAX_DEPTH = 64  # nesting of mappings/sequences, counting what aliases expand to
MAX_NODES = 20_000  # YAML nodes, as written and after alias expansion (the largest shipped file has 384)


class _YamlFloat(float):
    """A float that remembers how it was written (`version: 6.10` is not 6.1)."""

    yaml_text: str


class _DuplicateKey(Exception):
    def __init__(self, line: int, msg: str) -> None:
        super().__init__(msg)
        self.line, self.msg = line, msg


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _TooMany(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, keeps float text and bounds nesting and node count while composing."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # PyYAML composes recursively: stop well before Python's recursion limit.
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            if self._nodes > MAX_NODES:   # before composing them all: 300,000 list items take ~20 s
                raise _TooMany(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(line, f"duplicate key {key!r} (first given at line {seen[key]})")
                seen[key] = line
            except TypeError:  # unhashable key: let PyYAML report it
                pass
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        f = _YamlFloat(super().construct_yaml_float(node))
        f.yaml_text = node.value
        return f


_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], keys: _Loader) -> None:
    """lines[path] = 1-based line of the key (mapping) or item (sequence) at that path."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            line = k.start_mark.line + 1
            names = {str(k.value)} if isinstance(k, yaml.ScalarNode) else set()
            try:
                names.add(str(keys.construct_object(k, deep=True)))
            except (yaml.YAMLError, TypeError):
                pass
            for name in names:
                lines.setdefault(loc + (name,), line)
                if isinstance(v, yaml.ScalarNode):  # where the value's text starts (block scalars: next line)
                    lines.setdefault(loc + (name, VALUE), v.start_mark.line + 1 + (v.style in ("|", ">")))
                _record_lines(v, loc + (name,), lines, keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(loc + (str(i),), item.start_mark.line + 1)
            _record_lines(item, loc + (str(i),), lines, keys)


def _check_expansion(path: str, root: yaml.Node) -> None:
    """Refuse a node graph whose alias expansion is too deep, too large or recursive."""
    size: dict[int, int] = {}  # id(node) -> nodes it expands to
    active: set[int] = set()

    def walk(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ScenarioError(path, node.start_mark.line + 1,
                                f"YAML nested deeper than {MAX_DEPTH} levels (counting aliases)")
        if id(node) in size:
            return size[id(node)]
        if id(node) in active:
            raise ScenarioError(path, node.start_mark.line + 1, "YAML alias refers to itself (recursive anchor)")
        active.add(id(node))
        n = 1
        if isinstance(node, yaml.MappingNode):
            n += sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n += sum(walk(v, depth + 1) for v in node.value)
        active.discard(id(node))
        if n > MAX_NODES:
            raise ScenarioError(path, node.start_mark.line + 1,
                                f"YAML aliases expand to more than {MAX_NODES:,} nodes (anchor or node here)")
        size[id(node)] = n
        return n

    walk(root, 1)


def _line_at(text: str, index: int) -> int:
    return text.count("\n", 0, max(index, 0)) + 1


def parse_yaml(text: str, path: str) -> tuple[Any, dict[Loc, int]]:
    """The document and its line table; YAML errors become ScenarioError at the YAML mark."""
    if len(text) > MAX_BYTES:
        raise ScenarioError(path, None, f"file too large ({len(text):,} characters; a scenario is at most "
                            f"{MAX_BYTES:,})")
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, other controls)
        ch = e.character if isinstance(e.character, int) else ord(e.character)
        raise ScenarioError(path, _line_at(text, e.position),
                            f"character U+{ch:04X} is not allowed in a YAML file") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError(path, 1, "the file is empty (a scenario needs name, description, guest)")
        _check_expansion(path, node)
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        _record_lines(node, (), lines, _Loader(""))
        data = loader.construct_document(node)
    except _TooDeep as e:
        raise ScenarioError(path, e.line, f"YAML nested deeper than {MAX_DEPTH} levels") from None
    except _TooMany as e:
        raise ScenarioError(path, e.line, f"more than {MAX_NODES:,} YAML nodes (a scenario has a few hundred)") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer literal too long for int()
        raise ScenarioError(path, None, f"YAML value cannot be read: {str(e).splitlines()[0]}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "malformed YAML"
        if e.context and e.problem:
            started = f" started at line {e.context_mark.line + 1}" if e.context_mark else ""
            what += f" ({e.context}{started})"
        raise ScenarioError(path, mark.line + 1 if mark else None, f"YAML syntax error: {what}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(path, None, f"YAML error: {e}") from None
    except _DuplicateKey as e:
        raise ScenarioError(path, e.line, e.msg) from None
    finally:
        loader.dispose()
    return data, lines


# ---------------------------------------------------------------- pydantic errors -> lines

def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


def _union_member(t: Any, tag: str) -> Any:
    for a in typing.get_args(t):
        meta = typing.get_args(a)[1:] if typing.get_origin(a) is typing.Annotated else ()
        if any(getattr(m, "tag", None) == tag for m in meta):
            return typing.get_args(a)[0]
        m = _unwrap(a)
        if isinstance(m, type) and issubclass(m, BaseModel):
            lit = m.model_fields.get("type")
            if lit is not None and tag in typing.get_args(lit.annotation):
                return m
    return None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that validates the object at `loc` (for listing its valid keys)."""
    t: Any = Scenario
    for comp in loc:
        t = _unwrap(t)
        origin = typing.get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            if comp in t.model_fields:
                t = t.model_fields[comp].annotation
        elif origin is list and isinstance(comp, int):
            t = typing.get_args(t)[0]
        elif origin is dict:
            t = typing.get_args(t)[1]
        elif origin in (typing.Union, types.UnionType):
            if (m := _union_member(t, str(comp))) is not None:
                t = m
    t = _unwrap(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _shown(loc: tuple, lines: dict[Loc, int]) -> tuple[list[str | int], Loc]:
    """(loc parts worth showing, deepest loc present in the YAML)."""
    if not lines:  # built in code (e.g. `run --guest`): no YAML to consult, show the model's path
        return [c for c in loc if not (isinstance(c, str) and (c.startswith("function-") or "[" in c))], ()
    found: Loc = ()
    shown: list[str | int] = []
    for comp in loc:
        cand = found + (str(comp),)
        if cand in lines:
            found = cand
            shown.append(comp)
    return shown, found


def _dotted(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 50 else r[:47] + "..."


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], 1, 0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _one_error(err: dict, lines: dict[Loc, int]) -> tuple[int | None, str]:
    loc, typ, msg = tuple(err["loc"]), err["type"], err["msg"]
    ctx = err.get("ctx") or {}
    if typ == "value_error" and isinstance(ctx.get("error"), FieldError):
        loc, msg = loc + tuple(ctx["error"].loc), ctx["error"].msg
    elif typ in ("value_error", "assertion_error"):
        msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    if loc and loc[-1] == "[key]":
        loc, key_error = loc[:-1], True
    else:
        key_error = False
    shown, found = _shown(loc, lines)
    line = lines.get(found)
    if typ == "extra_forbidden":
        model = _model_at(loc[:-1])
        hint = _did_you_mean(loc[-1], model.model_fields) if model else ""
        where = f" in {_dotted(shown[:-1])}" if shown[:-1] else ""
        return line, f"unknown field {str(loc[-1])!r}{where}{hint}"
    if typ == "invalid_key":
        return line, f"field names are strings; {_short(err.get('input'))} is not (in {_dotted(shown[:-1])})"
    if typ == "missing":
        return line, f"field {_dotted(shown + [loc[-1]])}: required field missing"
    if typ == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        return line, (f"field {_dotted(shown)}: unknown type {ctx.get('tag')!r}"
                      f"{_did_you_mean(ctx.get('tag', ''), tags)}; expected one of {', '.join(tags)}")
    if typ == "union_tag_not_found":
        return line, f"field {_dotted(shown)}: needs a '{ctx.get('discriminator', 'type').strip(chr(39))}' key"
    if typ == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        msg += f" (got {_short(err.get('input'))}){_did_you_mean(err.get('input'), choices)}"
    elif typ not in ("value_error", "assertion_error") and not isinstance(err.get("input"), (dict, list)):
        msg += f" (got {_short(err.get('input'))})"
    if key_error and shown and str(shown[-1]) == str(loc[-1]):
        shown = shown[:-1]  # the message names the bad key itself
    return line, f"field {_dotted(shown)}: {msg}"


def validation_error(path: str, exc: ValidationError, lines: dict[Loc, int]) -> ScenarioError:
    """One ScenarioError for all of a file's validation errors, first (by line) at its line."""
    found: list[tuple[int, str]] = []
    for err in exc.errors(include_url=False):
        line, msg = _one_error(err, lines)
        if (line or 0, msg) not in found:
            found.append((line or 0, msg))
    found.sort(key=lambda x: x[0])
    (line, msg), rest = found[0], found[1:]
    extra = [f"{path}:{ln}: error: {m}" if ln else f"{path}: error: {m}" for ln, m in rest[:MAX_REPORTED - 1]]
    if len(rest) > MAX_REPORTED - 1:
        extra.append(f"... and {len(rest) - MAX_REPORTED + 1} more")
    return ScenarioError(path, line or None, "\n".join([msg] + extra))


# ---------------------------------------------------------------- public API

def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate one scenario file."""
    p = Path(path)
    shown = str(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ScenarioError(shown, None, f"file too large (more than {MAX_BYTES:,} bytes; "
                                "a scenario is a few KiB)")
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text() did
    except UnicodeDecodeError as e:
        raise ScenarioError(shown, raw.count(b"\n", 0, e.start) + 1,
                            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}") from None
    except FileNotFoundError:
        raise ScenarioError(shown, None, "no such file or directory") from None
    except IsADirectoryError:
        raise ScenarioError(shown, None, "is a directory, not a scenario file") from None
    except OSError as e:
        raise ScenarioError(shown, None, f"cannot read: {e.strerror or e}") from None
    data, lines = parse_yaml(text, shown)
    if not isinstance(data, dict):
        raise ScenarioError(shown, lines.get(()), "a scenario is a mapping of fields "
                            f"(name, description, guest, ...), not a {type(data).__name__}")
    try:
        sc = Scenario.model_validate(data, context={"base_dir": p.parent})
    except ValidationError as e:
        raise validation_error(shown, e, lines) from None
    sc._path, sc._lines = p, lines
    return sc


def quick_scenario(guest: str, mode: str | None) -> Scenario:
    """`run/debug --guest FILE.S --mode MODE`: the guest with default memory and devices, no expectations."""
    if mode is None:
        raise ScenarioError(guest, None, "--guest needs --mode real16|prot32|long64")
    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", Path(guest).stem) or "guest"
    try:
        return Scenario.model_validate(
            {"name": name, "description": f"quick run of {guest}", "guest": {"source": guest, "mode": mode}},
            context={"base_dir": Path.cwd()})
    except ValidationError as e:
        raise validation_error(guest, e, {}) from None


def scenario_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the *.yaml files (sorted) in named directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
    return out


def load_scenarios(paths: Iterable[str | Path]) -> list[Scenario]:
    """Load several files (directories expand to their *.yaml); raises on the first bad one."""
    return [load_scenario(p) for p in scenario_files(paths)]


def format_error(err: BaseException) -> str:
    """`file:line: error: msg` (further lines as they are), with no traceback."""
    if isinstance(err, ScenarioError):
        where = f"{err.path}:{err.line}: " if err.path and err.line else (f"{err.path}: " if err.path else "")
        return f"{where}error: {err.msg}"
    return f"error: {err}"
