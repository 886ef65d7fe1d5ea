"""The template sandbox: Jinja2's immutable sandbox with limits, so that no rule can stall the daemon.

Templates render inside the pipeline's Match stage, on the event loop: a template's worst case is the
daemon's worst case. Before these limits, ``{{ 'x' * 200000000 }}`` took 7 s to *load* (Jinja2 folds
constant expressions while compiling) and sent a 200 MB notification, and a body with two nested
``range(100000)`` loops stopped all polling for good. The limits come in three layers:

1. **Nothing runs while compiling.** The optimizer is off and output is never evaluated at compile
   time, so loading a template costs the same whatever it computes. Constant expressions that would
   break a limit (``'x' * 200000000``, ``range(1000000)``, constant loops over the iteration budget)
   are refused at load, so ``runwatch check`` names them with file and line.
2. **Sizes are checked before the work is done.** ``*``, ``**``, ``+``, ``%`` and ``~``, ``range()``,
   list and dict literals, the string methods and filters that take a width or a count, and string
   formatting all compute the size of what they would make first; every value a call or a filter
   returns is measured. No value a template makes is larger than :attr:`Limits.max_value`.
3. **A budget per render**: loop iterations, calls, the characters and items made in all, and a
   wall-clock deadline checked at every loop step, call, operator, attribute and output. Whatever the
   checks above cannot foresee still ends, a few milliseconds after the deadline at worst.

Going over a limit raises :class:`TemplateLimitError` (a ``SecurityError``): the render fails like any
other template error, and :mod:`runwatch.rules.templates` falls back to the default text.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import re
import string
import time
import types
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import jinja2
from jinja2 import nodes, pass_context, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

T = TypeVar("T")


class TemplateLimitError(SecurityError):
    """A template went over a limit (size, loop iterations, calls, time); the message says which.

    ``lineno`` is the template line the problem is on, when known (load-time refusals).
    """

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on one render of one template (documented in rules/README.md, "Limits")."""

    #: Characters of a string, or items (counted all the way down) of a list or mapping, that any one
    #: value a template makes may have: far above any useful notification, far below a stall.
    max_value: int = 1_000_000
    #: Items of one ``range()`` (Jinja2's own sandbox allows 100,000).
    max_range: int = 10_000
    #: Loop iterations per render, every loop counted (two nested loops of 1,000: 1,001,000).
    max_iterations: int = 100_000
    #: Calls (functions, methods, macros) per render.
    max_calls: int = 100_000
    #: Characters and items made per render, in all: what bounds memory when a loop keeps making values.
    max_made: int = 10_000_000
    #: Bits of an integer a template computes (``2 ** 4096`` is about 1,233 digits).
    max_int_bits: int = 4096
    #: ``tojson(indent)``.
    max_json_indent: int = 16
    #: Wall-clock seconds per render.
    time_limit: float = 0.25
    #: Monotonic seconds; tests pass a clock they drive.
    clock: Callable[[], float] = time.monotonic


DEFAULT_LIMITS = Limits()


class Budget:
    """What one render has used so far; the sandbox's hooks charge it and raise when it runs out."""

    __slots__ = ("_weights", "calls", "deadline", "iterations", "limits", "made")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = limits.clock() + limits.time_limit
        self.iterations = 0
        self.calls = 0
        self.made = 0
        # id -> (value, weight): the value is kept so that its id cannot be reused during the render.
        self._weights: dict[int, tuple[Any, int]] = {}

    def tick(self) -> None:
        """Raise once the render has used up its time."""
        if self.limits.clock() > self.deadline:
            raise TemplateLimitError(f"the template took longer than {self.limits.time_limit:g} s")

    def step(self) -> None:
        """One loop iteration."""
        self.iterations += 1
        if self.iterations > self.limits.max_iterations:
            raise TemplateLimitError(
                f"the template ran more than {self.limits.max_iterations} loop iterations"
            )
        self.tick()

    def call(self) -> None:
        """One call of a function, method or macro."""
        self.calls += 1
        if self.calls > self.limits.max_calls:
            raise TemplateLimitError(f"the template made more than {self.limits.max_calls} calls")
        self.tick()

    def weight(self, value: Any) -> int:
        """Characters of a string, or 1 + the weights of everything inside a list or mapping.

        Shared parts count each time they appear, as they would when the value is turned into text;
        results are remembered for the render, so a value built by repeating itself costs its size in
        nodes to measure, not its weight.
        """
        if isinstance(value, str | bytes | bytearray):
            return len(value)
        if isinstance(value, int):
            return value.bit_length() // 3 + 1
        if not isinstance(value, Mapping | list | tuple | set | frozenset | Namespace):
            return 1
        key = id(value)
        known = self._weights.get(key)
        if known is not None and known[0] is value:
            return known[1]
        self._weights[key] = (value, 1)  # a value that contains itself counts once
        if isinstance(value, Namespace):
            value = object.__getattribute__(value, "_Namespace__attrs")
        if isinstance(value, Mapping):
            total = 1 + sum(self.weight(k) + self.weight(v) for k, v in value.items())
        else:
            total = 1 + sum(self.weight(v) for v in value)
        self._weights[key] = (value, total)
        return total

    def charge(self, value: T) -> T:
        """Measure a value the template made or was handed by a call; refuse it if it is too large."""
        self.add(self.weight(value))
        return value

    def add(self, w: int) -> None:
        """Count a value of weight ``w``: refuse it if it is too large, or if the render made too much."""
        if w > self.limits.max_value:
            raise TemplateLimitError(
                f"a value of {w} characters or items (the limit is {self.limits.max_value})"
            )
        self.made += w
        if self.made > self.limits.max_made:
            raise TemplateLimitError(
                f"the template made more than {self.limits.max_made} characters or items in all"
            )

    def over(self, size: float, what: str) -> None:
        """Refuse to make something of ``size`` characters or items, before making it."""
        if size > self.limits.max_value:
            raise TemplateLimitError(
                f"{what} would make {_count(size)} characters or items (the limit is {self.limits.max_value})"
            )


def _count(size: float) -> str:
    return str(int(size)) if size < 1e18 else "more than 10^18"


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("runwatch_template_budget")


def current_budget() -> Budget:
    """The budget of the render in progress; outside one (compiling), a fresh default one."""
    budget = _CURRENT.get(None)
    return budget if budget is not None else Budget(DEFAULT_LIMITS)


# --- size checks shared by the load-time refusal and the render-time hooks ---------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_binop(op: str, left: Any, right: Any, budget: Budget) -> None:
    """Refuse ``left op right`` when its result would be over a limit, without computing it."""
    limits = budget.limits
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            n = _int(times)
            if n is not None and isinstance(seq, str | bytes | list | tuple):
                budget.over(budget.weight(seq) * max(n, 0), "'*'")
        a, b = _int(left), _int(right)
        if a is not None and b is not None and a.bit_length() + b.bit_length() > limits.max_int_bits:
            raise TemplateLimitError(f"'*' would make an integer over {limits.max_int_bits} bits")
    elif op == "**":
        a, b = _int(left), _int(right)
        if a is not None and b is not None and b > 0 and abs(a) > 1:
            bits = a.bit_length() * b
            if bits > limits.max_int_bits:
                raise TemplateLimitError(
                    f"'**' would make an integer of about {_count(bits)} bits"
                    f" (the limit is {limits.max_int_bits})"
                )
    elif op == "+":
        if (isinstance(left, str) and isinstance(right, str)) or (
            isinstance(left, list | tuple) and isinstance(right, list | tuple)
        ):
            budget.over(budget.weight(left) + budget.weight(right), "'+'")
    elif op == "%" and isinstance(left, str | bytes):
        check_printf(left, right, budget)


#: A printf-style conversion: width and precision are what can make it large.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def check_printf(fmt: str | bytes, args: Any, budget: Budget) -> None:
    """Refuse ``fmt % args`` with a width or precision over the limit, or one taken from the args."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    for m in _PRINTF.finditer(text):
        for part in m.groups():
            if part == "*":
                raise TemplateLimitError("a '*' width or precision in '%' formatting is not allowed")
            if part is not None:
                budget.over(int(part), f"'%' formatting with width {part}")
    budget.over(len(text) + budget.weight(args), "'%' formatting")


def check_format_spec(fmt: str, budget: Budget) -> None:
    """Refuse ``fmt.format(...)`` with a width or precision over the limit, or a nested one."""
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimitError("a width or precision from a nested '{}' in format() is not allowed")
        for number in re.findall(r"\d+", spec):
            budget.over(int(number), f"format() with width {number}")


def check_range(args: tuple[Any, ...], budget: Budget) -> range:
    """``range(*args)``, or TemplateLimitError when it has more items than allowed."""
    rng = range(*args)
    try:
        size: float = len(rng)
    except OverflowError:
        size = math.inf
    if size > budget.limits.max_range:
        shown = ", ".join(str(a) for a in args)
        raise TemplateLimitError(
            f"range({shown}) has {_count(size)} items (the limit is {budget.limits.max_range})"
        )
    return rng


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> tuple[Any, ...]:
    """Refuse a string or integer method call that would make something too large; returns the args.

    ``join`` gets its items as a list (so that they can be measured first and still joined).
    """
    if not isinstance(obj, types.BuiltinMethodType):
        return args
    owner, name = obj.__self__, obj.__name__
    if isinstance(owner, str | bytes):
        if name in _WIDTH_METHODS:
            width = _int(args[0] if args else kwargs.get("width"))
            if width is not None:
                budget.over(width, f"{name}({width})")
        elif name == "expandtabs":
            size = _int(args[0] if args else kwargs.get("tabsize", 8)) or 0
            tab: Any = "\t" if isinstance(owner, str) else b"\t"
            budget.over(len(owner) + owner.count(tab) * size, "expandtabs()")
        elif name == "replace" and len(args) >= 2 and all(type(a) is type(owner) for a in args[:2]):
            budget.over(
                _replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1), "replace()"
            )
        elif name == "join" and args:
            items = list(args[0])
            joined = sum(budget.weight(i) for i in items) + len(owner) * max(len(items) - 1, 0)
            budget.over(joined, "join()")
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((budget.weight(v) for v in args[0].values()), default=1)
            budget.over(len(owner) * max(longest, 1), "translate()")
    elif isinstance(owner, int) and name == "to_bytes":
        length = _int(args[0] if args else kwargs.get("length", 1))
        if length is not None:
            budget.over(length, f"to_bytes({length})")
    return args


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    n = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return int(len(text) + n * (len(new) - len(old)))


# --- filters: the ones that take a width or a count are checked first -------------------------------


def _f_center(a: dict[str, Any], b: Budget) -> None:
    width = _int(a.get("width"))
    if width is not None:
        b.over(width, f"center({width})")


def _f_indent(a: dict[str, Any], b: Budget) -> None:
    s, width = a.get("s"), a.get("width")
    pad = len(width) if isinstance(width, str) else (_int(width) or 0)
    lines = (s.count("\n") if isinstance(s, str) else b.weight(s)) + 1
    b.over(b.weight(s) + lines * pad, "indent()")


def _f_wordwrap(a: dict[str, Any], b: Budget) -> None:
    s, width, wrap = a.get("s"), _int(a.get("width")) or 1, a.get("wrapstring")
    size = b.weight(s)
    b.over(size + (size // max(width, 1) + 1) * (len(wrap) if isinstance(wrap, str) else 1), "wordwrap()")


def _f_batch(a: dict[str, Any], b: Budget) -> None:
    count, fill = _int(a.get("linecount")), a.get("fill_with")
    if count is not None and fill is not None:
        b.over(count * b.weight(fill), f"batch({count}) with fill_with")


def _f_slice(a: dict[str, Any], b: Budget) -> None:
    count, fill = _int(a.get("slices")), a.get("fill_with")
    if count is not None:
        if count > b.limits.max_range:
            raise TemplateLimitError(
                f"slice({count}) makes {count} lists (the limit is {b.limits.max_range})"
            )
        if fill is not None:
            b.over(count * b.weight(fill), f"slice({count}) with fill_with")


def _f_tojson(a: dict[str, Any], b: Budget) -> None:
    indent = a.get("indent")
    size = len(indent) if isinstance(indent, str) else (_int(indent) or 0)
    if size > b.limits.max_json_indent:
        raise TemplateLimitError(f"tojson indent {size} is over the limit of {b.limits.max_json_indent}")


def _f_format(a: dict[str, Any], b: Budget) -> None:
    value = a.get("value")
    if isinstance(value, str):
        check_printf(value, (a.get("args"), a.get("kwargs")), b)


def _f_replace(a: dict[str, Any], b: Budget) -> None:
    s, old, new = a.get("s"), a.get("old"), a.get("new")
    text = s if isinstance(s, str) else str(s)
    if isinstance(old, str) and isinstance(new, str):
        b.over(_replaced_size(text, old, new, a.get("count")), "replace()")


def _f_join(a: dict[str, Any], b: Budget) -> None:
    items = list(a.get("value") or ())
    a["value"] = items
    sep = a.get("d")
    b.over(
        sum(b.weight(i) for i in items) + b.weight(sep) * max(len(items) - 1, 0),
        "join()",
    )


def _f_sum(a: dict[str, Any], b: Budget) -> None:
    start = a.get("start")
    if not isinstance(start, int | float):
        # Summing lists or strings copies the running total at every item: quadratic time.
        raise TemplateLimitError("sum() takes numbers only (start must be a number)")


_FILTER_CHECKS: dict[str, Callable[[dict[str, Any], Budget], None]] = {
    "center": _f_center,
    "indent": _f_indent,
    "wordwrap": _f_wordwrap,
    "batch": _f_batch,
    "slice": _f_slice,
    "tojson": _f_tojson,
    "format": _f_format,
    "replace": _f_replace,
    "join": _f_join,
    "sum": _f_sum,
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its arguments first (when it takes a width or count) and charges its result."""
    check = _FILTER_CHECKS.get(name)
    signature = inspect.signature(func) if check is not None else None

    @functools.wraps(func)  # keeps ``jinja_pass_arg``, so Jinja passes the same leading argument
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.tick()
        if check is not None and signature is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check(bound.arguments, budget)
            args, kwargs = bound.args, bound.kwargs
        return budget.charge(func(*args, **kwargs))

    return guarded


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja2's ``lipsum()``, with its sizes bounded."""
    if _int(n) is None or _int(max) is None or n > 100 or max > 1000:
        raise TemplateLimitError("lipsum() takes at most n=100 paragraphs of at most max=1000 words")
    return str(jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def _range(*args: Any) -> range:
    return check_range(args, current_budget())


class _Counted:
    """An iterable that charges one loop step per item: every ``{% for %}`` loops over one of these."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Iterable[Any], budget: Budget) -> None:
        self._items = items
        self._budget = budget

    def __iter__(self) -> Iterator[Any]:
        step = self._budget.step
        for item in self._items:
            step()
            yield item

    def __len__(self) -> int:
        # ``loop.length`` asks; an iterable without a length raises TypeError, which LoopContext expects.
        return len(self._items)  # type: ignore[arg-type]


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Every ``{{ ... }}`` (and literal text inside a capture) passes here: count it; null shows as nothing.

    Taking ``context`` also keeps Jinja2 from evaluating output at compile time.
    """
    budget = current_budget()
    budget.tick()
    if value is None:
        return ""
    if type(value) is str:  # most output: measured without the general walk
        budget.add(len(value))
        return value
    return budget.charge(value)


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, made loud (a refused attribute is an error) and bounded (see the module)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        # optimized=False: the optimizer folds constant expressions at compile time, doing their work.
        # ChainableUndefined: a key the API left out renders empty however deep (`run.metadata.team`,
        # `monitor.metadata.team` on a monitor without metadata), as `or "default"` expects.
        super().__init__(
            autoescape=False, finalize=_finalize, optimized=False, undefined=jinja2.ChainableUndefined
        )
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        budget.tick()
        check_binop(operator, left, right, budget)
        return budget.charge(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            check_format_spec(fmt, current_budget())
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(__obj, "__self__", None) is __self:  # one of the hooks below, put in by guard()
            return __context.call(__obj, *args, **kwargs)
        budget = current_budget()
        budget.call()
        if isinstance(__obj, LoopContext) and args:  # ``loop(children)`` in a recursive loop
            args = (_Counted(args[0], budget), *args[1:])
        else:
            args = check_method(__obj, args, kwargs, budget)
        return budget.charge(super().call(__context, __obj, *args, **kwargs))

    # -- hooks the compiled template calls (see guard()) ---------------------------------------------
    def rw_iter(self, items: Iterable[Any]) -> _Counted:
        return _Counted(items, current_budget())

    def rw_made(self, value: T) -> T:
        return current_budget().charge(value)

    @pass_eval_context
    def rw_concat(self, eval_ctx: EvalContext, *parts: Any) -> str:
        budget = current_budget()
        budget.tick()
        budget.over(sum(budget.weight(p) for p in parts), "'~'")
        return budget.charge((markup_join if eval_ctx.autoescape else str_join)(parts))


# --- compile time: refuse what can be refused, then put the hooks in ----------------------------------


class _Guard(NodeTransformer):
    """Rewrites a parsed template so that loops, ``~``, literals and captured text go through the hooks.

    Literal text the template outputs directly is bounded by the output cap of
    :func:`render_bounded`; literal text captured (``{% set x %}``, macros, ``{% call %}``,
    ``{% filter %}``) never reaches it, so there it goes through ``finalize`` and is counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.capturing = 0

    def _capture(self, node: nodes.Node) -> nodes.Node:
        self.capturing += 1
        try:
            return self.generic_visit(node)
        finally:
            self.capturing -= 1

    visit_AssignBlock = visit_Macro = visit_CallBlock = visit_FilterBlock = _capture

    @staticmethod
    def _hook(name: str, *args: nodes.Node, lineno: int) -> nodes.Call:
        return nodes.Call(
            nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None, lineno=lineno
        )

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._hook("rw_iter", node.iter, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._hook("rw_concat", *node.nodes, lineno=node.lineno)

    def _literal(self, node: nodes.List | nodes.Tuple | nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node, nodes.Tuple) and node.ctx != "load":
            return node  # an assignment target: ``{% for k, v in ... %}``
        return self._hook("rw_made", node, lineno=node.lineno)

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        if not self.capturing:
            return node
        node.nodes = [
            nodes.MarkSafeIfAutoescape(nodes.Const(n.data, lineno=n.lineno), lineno=n.lineno)
            if isinstance(n, nodes.TemplateData)
            else n
            for n in node.nodes
        ]
        return node


def guard(ast: nodes.Template) -> nodes.Template:
    """Put the render-time hooks into a parsed template (in place); returns it."""
    result = _Guard().visit(ast)
    assert isinstance(result, nodes.Template)
    return result


_NOT_CONST: Any = object()
_FOLDABLE = frozenset({"+", "-", "*", "/", "//", "%", "**"})


def _const(node: nodes.Node, budget: Budget) -> Any:
    """The value of a constant expression (checked against the limits), or _NOT_CONST."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_const(i, budget) for i in node.items]
        if any(i is _NOT_CONST for i in items):
            return _NOT_CONST
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg | nodes.Pos):
        value = _const(node.node, budget)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node, nodes.Neg) else value
        return _NOT_CONST
    if isinstance(node, nodes.BinExpr) and node.operator in _FOLDABLE:
        left, right = _const(node.left, budget), _const(node.right, budget)
        if left is _NOT_CONST or right is _NOT_CONST:
            return _NOT_CONST
        check_binop(node.operator, left, right, budget)
        try:
            return SandboxEnvironment.default_binop_table[node.operator](left, right)
        except Exception:
            return _NOT_CONST
    if isinstance(node, nodes.Concat):
        parts = [_const(n, budget) for n in node.nodes]
        if any(p is _NOT_CONST for p in parts):
            return _NOT_CONST
        budget.over(sum(budget.weight(p) for p in parts), "'~'")
        return "".join(str(p) for p in parts)
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "range"
        and not (node.kwargs or node.dyn_args or node.dyn_kwargs)
    ):
        args = tuple(_const(a, budget) for a in node.args)
        if any(a is _NOT_CONST for a in args) or not all(_int(a) is not None for a in args):
            return _NOT_CONST
        try:
            return check_range(args, budget)
        except ValueError:
            return _NOT_CONST
    return _NOT_CONST


def _check_filter(node: nodes.Filter, env: SandboxEnvironment, budget: Budget) -> None:
    check = _FILTER_CHECKS.get(node.name)
    func = env.filters.get(node.name)
    if check is None or func is None or node.dyn_args or node.dyn_kwargs:
        return
    args = [_const(a, budget) for a in node.args]
    kwargs = {str(k.key): _const(k.value, budget) for k in node.kwargs}
    if any(a is _NOT_CONST for a in [*args, *kwargs.values()]):
        return
    value = _const(node.node, budget) if node.node is not None else _NOT_CONST
    leading = [None] if getattr(func, "jinja_pass_arg", None) is not None else []
    try:
        bound = inspect.signature(func).bind(*leading, "" if value is _NOT_CONST else value, *args, **kwargs)
    except TypeError:
        return  # wrong arguments: Jinja2 says so when it renders
    bound.apply_defaults()
    check(bound.arguments, budget)


def _loop_count(node: nodes.For, budget: Budget) -> int | None:
    items = _const(node.iter, budget)
    return len(items) if isinstance(items, range | list | tuple) else None


def _check_loops(node: nodes.Node, outer: int, budget: Budget, total: list[int]) -> None:
    """Add up the iterations of constant loops as written: nested ones multiply; a loop over data
    counts as one turn for the loops inside it (it may run none), and adds nothing itself."""
    if isinstance(node, nodes.For):
        count = _loop_count(node, budget)
        here = outer * (1 if count is None else count)
        if count is not None:
            total[0] += here
            if total[0] > budget.limits.max_iterations:
                raise TemplateLimitError(
                    f"its loops would run {total[0]} iterations or more"
                    f" (the limit is {budget.limits.max_iterations})",
                    node.lineno,
                )
        for child in node.body:
            _check_loops(child, here, budget, total)
        for child in node.else_:
            _check_loops(child, outer, budget, total)
        return
    for child in node.iter_child_nodes():
        _check_loops(child, outer, budget, total)


_NO_OTHER_TEMPLATES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def standalone_problem(ast: nodes.Template) -> str | None:
    """What is wrong with a template that includes, imports or extends another: there are no others."""
    for node in ast.find_all(_NO_OTHER_TEMPLATES):
        tag = {"FromImport": "from ... import"}.get(type(node).__name__, type(node).__name__.lower())
        line = f" (template line {node.lineno})" if node.lineno > 1 else ""
        return f"{{% {tag} %}} is not available: a rule template stands alone{line}"
    return None


def refuse_at_load(ast: nodes.Template, env: SandboxEnvironment, limits: Limits) -> None:
    """Raise TemplateLimitError (with ``lineno``) for what is over a limit however the template is used.

    Only constant expressions are evaluated, each checked before it is computed, so this is cheap.
    """
    budget = Budget(limits)
    for node in ast.find_all((nodes.BinExpr, nodes.Concat, nodes.Call, nodes.Filter)):
        try:
            if isinstance(node, nodes.Filter):
                _check_filter(node, env, budget)
            else:
                _const(node, budget)
        except TemplateLimitError as exc:
            raise TemplateLimitError(str(exc), node.lineno) from None
    _check_loops(ast, 1, budget, [0])


def render_bounded(
    template: jinja2.Template, variables: Mapping[str, Any], limits: Limits, max_chars: int
) -> str:
    """Render with a fresh budget; stops reading output after ``max_chars`` + 1 characters.

    The result is at most ``max_chars`` + 1 characters long, so the caller can tell that it was cut.
    Raises whatever the template raises (TemplateLimitError included).
    """
    budget = Budget(limits)
    token = _CURRENT.set(budget)
    parts: list[str] = []
    size = 0
    stream = cast(Generator[str, None, None], template.generate(variables))
    try:
        for piece in stream:
            parts.append(piece)
            size += len(piece)
            if size > max_chars:
                break
    finally:
        stream.close()
        _CURRENT.reset(token)
    return "".join(parts)[: max_chars + 1]
