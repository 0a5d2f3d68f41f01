"""The templates' sandbox: Jinja's immutable sandbox with every render bounded, in steps (calls,
filters, loop turns, operators) and in the size of every string, list or number it builds, so no
template, written by mistake or on purpose, can hang the agent or exhaust its memory, whether at
load (the worst-case measure) or at send."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

#: Calls, filters, loop turns and checked operators in one render, each also charged one step
#: per 8 characters or items it reads or builds past the first 64 (so 10,000 steps stay a few
#: tens of milliseconds whatever the steps are). A text of at most 10 segments needs a few dozen;
#: a loop over every caller-controlled character a few hundred.
STEPS = 10_000

#: The longest string or sequence a template may build, and the longest text it may render.
#: 10 segments of GSM-7 are 1,530 characters; this leaves room for text that `truncate` cuts.
SIZE = 4_096

#: The widest integer a template may compute (a 15-digit number is 50 bits).
INT_BITS = 256


class TooCostly(SecurityError):
    """A render went over the sandbox's bounds: the template is refused at load, or the message
    suppressed as ``template_error`` at send."""


class _Steps:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


_CURRENT: ContextVar[_Steps | None] = ContextVar("template_steps", default=None)


def _step(n: int = 1) -> None:
    steps = _CURRENT.get()
    if steps is not None:
        steps.left -= n
        if steps.left < 0:
            raise TooCostly(f"takes more than {STEPS:,} steps (calls, filters, loop turns)")


def _too_big(what: str, size: int) -> TooCostly:
    return TooCostly(f"{what} would be {size:,} long, over the limit of {SIZE:,}")


_SIZED = (str, list, tuple, dict, set, frozenset)


def _sized(value: Any) -> Any:
    if isinstance(value, _SIZED):
        n = len(value)
        if n > SIZE:
            raise _too_big(type(value).__name__, n)
        if n > 64:
            _step(n >> 3)
    elif isinstance(value, int) and value.bit_length() > INT_BITS:
        raise TooCostly(f"a number over {INT_BITS} bits")
    return value


_NESTED = (list, tuple, dict, set, frozenset, Namespace)


def _flat(value: Any) -> Any:
    """Whatever a template turns into text (output, `~`, filters, formatting, calls) is walked
    first when it is a container: nested or shared lists print far longer than they are long.
    Long values are charged steps by their size: reading them is work too."""
    if isinstance(value, str):
        if len(value) > 64:
            _step(len(value) >> 3)
        return value
    if not isinstance(value, _NESTED):
        return value
    left = 4 * SIZE  # items and characters
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Namespace):
            v = object.__getattribute__(v, "_Namespace__attrs")
        items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        left -= len(items) + sum(len(x) for x in items if isinstance(x, str))
        if left < 0:
            raise TooCostly(f"a value holding more than {4 * SIZE:,} items and characters")
        stack.extend(x for x in items if isinstance(x, _NESTED))
    _step((4 * SIZE - left) >> 3)
    return value


def _width(what: str, n: Any) -> None:
    if isinstance(n, int) and n > SIZE:
        raise _too_big(what, n)


# printf-style conversions: a width or precision from the arguments (*) can't be checked before.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_percent(fmt: str) -> None:
    for width, precision in _PERCENT.findall(fmt):
        for n in (width, precision):
            if n == "*":
                raise TooCostly("a width taken from the arguments ('*') is not allowed")
            if n:
                _width("a formatted field", int(n))


def _check_format(fmt: str) -> None:
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is not None and spec:
            if "{" in spec:
                raise TooCostly("a width taken from the arguments ('{:{w}}') is not allowed")
            for n in re.findall(r"\d+", spec):
                _width("a formatted field", int(n))


def _check_replace(s: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        n = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            n = min(n, count)
        _sized_len(len(s) + n * (len(new) - len(old)))


def _check_join(items: Any, sep: Any = "", *_: Any) -> None:
    if isinstance(items, list | tuple) and isinstance(sep, str):
        _sized_len(sum(len(str(x)) for x in items[: SIZE + 1]) + len(sep) * len(items))


def _sized_len(n: int) -> None:
    if n > SIZE:
        raise _too_big("str", n)


def _check_sum(_items: Any, _attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        raise TooCostly("sum adds numbers only")


def _first_arg_width(what: str) -> Callable[..., None]:
    def check(_value: Any, width: Any = 0, *_: Any, **__: Any) -> None:
        _width(what, width)

    return check


# Filters whose result grows with an argument, checked before they run (value first).
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _first_arg_width("centered text"),
    "indent": lambda s, width=4, *_, **__: _sized_len(
        len(str(s)) + (str(s).count("\n") + 1) * (len(width) if isinstance(width, str) else width)),
    "wordwrap": lambda s, width=79, *args, **kwargs: _sized_len(
        len(str(s)) * (1 + len(kwargs.get("wrapstring", args[1] if len(args) > 1 else "") or ""))),
    "batch": _first_arg_width("a batch"),
    "slice": _first_arg_width("a slice count"),
    "format": lambda value, *args, **kwargs: _check_percent(str(value)),
    "replace": _check_replace,
    "join": lambda value, d="", *_, **__: _check_join(value, d),
    "sum": lambda value, attribute=None, start=0: _check_sum(value, attribute, start),
}


# str methods whose result grows with an argument, checked before they run.
_METHOD_CHECKS: dict[str, Callable[..., None]] = {
    "center": _first_arg_width("centered text"),
    "ljust": _first_arg_width("padded text"),
    "rjust": _first_arg_width("padded text"),
    "zfill": _first_arg_width("padded text"),
    "expandtabs": lambda s, n=8, *_: _sized_len(len(s) * n if isinstance(n, int) else 0),
    "replace": _check_replace,
    "join": lambda sep, items, *_: _check_join(items, sep),
}


# Filters that run regular expressions or sort: charged 2 steps a character or item more.
_HEAVY = frozenset({"urlize", "wordwrap", "wordcount", "striptags", "title", "sort", "unique",
                    "groupby", "dictsort", "tojson", "pprint", "xmlattr", "truncate"})


def _bounded_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    passes = hasattr(f, "jinja_pass_arg")
    check = _FILTER_CHECKS.get(name)

    heavy = name in _HEAVY

    def bounded(*args: Any, **kwargs: Any) -> Any:
        if heavy:
            _step(8 + 2 * sum(len(a) for a in args if isinstance(a, _SIZED)))
        _step()
        for a in args:
            _flat(a)
        if check is not None:
            check(*(args[1:] if passes else args), **kwargs)
        return _sized(f(*args, **kwargs))

    if passes:
        bounded.jinja_pass_arg = f.jinja_pass_arg  # type: ignore[attr-defined]
    bounded.__name__ = getattr(f, "__name__", name)
    return bounded


def _range(*args: int) -> range:
    r = range(*args)
    if len(r) > SIZE:
        raise _too_big("range", len(r))
    return r


def _turns(iterable: Any) -> Iterator[Any]:
    """Every loop's iterable passes here: each turn is a step."""
    for item in iterable:
        _step()
        yield item


def _concat(parts: Iterable[Any]) -> str:
    _step()
    return _sized("".join(str(_flat(p)) for p in parts))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int):
                _sized_len(len(seq) * n)
        if (isinstance(left, int) and isinstance(right, int)
                and left.bit_length() + right.bit_length() > INT_BITS):
            raise TooCostly(f"a number over {INT_BITS} bits")
    elif (operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
          and (right > INT_BITS or left.bit_length() * right > INT_BITS)):
        raise TooCostly(f"a number over {INT_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        _check_percent(left)
        _flat(right)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Rendering through ``bounded_render`` counts steps; the size checks hold everywhere."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_flat, **options)
        self.filters["_turns"] = _turns
        self.filters["_concat"] = _concat
        self.filters["_weigh"] = _flat

    def bound_filters(self) -> None:
        """Wrap every filter in the step count and size checks; call once filters are set."""
        for name, f in list(self.filters.items()):
            if not name.startswith("_"):
                self.filters[name] = _bounded_filter(name, f)
        self.globals["range"] = _range

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            if loop.recursive:
                raise TemplateSyntaxError("recursive loops are not allowed in SMS templates",
                                          loop.lineno, name, filename)
            loop.iter = nodes.Filter(loop.iter, "_turns", [], [], None, None, lineno=loop.lineno)
        for compare in tree.find_all(nodes.Compare):
            # `in` and `==` walk their operands: weigh them like a filter's arguments
            compare.expr = self._weighed(compare.expr)
            for operand in compare.ops:
                operand.expr = self._weighed(operand.expr)
        for concat in list(tree.find_all(nodes.Concat)):
            # `~` joins in one step through _concat, so its result is size-checked too
            concat.nodes = [nodes.Filter(nodes.List(concat.nodes, lineno=concat.lineno), "_concat",
                                         [], [], None, None, lineno=concat.lineno)]
        return tree

    @staticmethod
    def _weighed(expr: nodes.Expr) -> nodes.Expr:
        return nodes.Filter(expr, "_weigh", [], [], None, None, lineno=expr.lineno)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return _sized(value) if isinstance(argument, slice) else value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        _check_binop(operator, left, right)
        return _sized(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        for a in (*args, *kwargs.values()):
            _flat(a)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            _flat(owner)
            method = getattr(target, "__name__", "")
            if method in ("format", "format_map"):
                _check_format(owner)
            elif method in _METHOD_CHECKS:
                _METHOD_CHECKS[method](owner, *args, **kwargs)
        return _sized(super().call(context, obj, *args, **kwargs))


def bounded_render(template: Template, context: Mapping[str, Any]) -> str:
    """``template.render(context)`` under a fresh step count; the text is refused past SIZE
    characters, checked as it is produced."""
    token = _CURRENT.set(_Steps(STEPS))
    try:
        out: list[str] = []
        total = 0
        for chunk in template.root_render_func(template.new_context(context)):
            total += len(chunk)
            if total > SIZE:
                raise TooCostly(f"renders to more than {SIZE:,} characters")
            out.append(chunk)
        return "".join(out)
    except Exception:  # noqa: BLE001 - re-raised, as render() does, at the template's own lines
        template.environment.handle_exception()
    finally:
        _CURRENT.reset(token)
