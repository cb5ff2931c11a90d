"""What lint can prove about a template's budget without running it.

* An operation whose operands are all constants is evaluated through the
  same guarded operations a render uses, under a meter of its own: one that
  would build too large a value (``'x'|center(10**9)``, ``range(99999)``) is
  refused before it allocates, and that refusal is the proof. Lint spends at
  most one render's budget per template on this, and stops proving (without
  an error) when it runs out.
* Loops over constants whose iterations, nested, pass the loop budget; text
  (literal or constant) that, with those loops, passes the output budget.
* Macros that call themselves (directly or around a cycle) on every path.

(Template text itself is short: the schema bounds every string.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from jinja2 import Environment, nodes
from jinja2.runtime import str_join

from .budget import MAX_ITERATIONS, MAX_OUTPUT, BudgetExceeded, Meter, OperationRefused, metered

_UNKNOWN: Any = object()


class _Impossible(Exception):
    """The node is not a constant (or evaluating it failed for a reason the render reports)."""


class _Folder:
    """Evaluates constant expressions once each, with the render's guards."""

    def __init__(self, env: Environment, shadowed: set[str]) -> None:
        self.env = env
        self.shadowed = shadowed
        self.values: dict[int, Any] = {}
        self.problems: list[str] = []
        self.context = env.context_class(env, {}, None, {})

    def fold(self, node: nodes.Node) -> Any:
        """The value of ``node``; raises :class:`_Impossible` when it has none known."""
        key = id(node)
        value = self.values.get(key)
        if value is None and key not in self.values:
            try:
                value = self._fold(node)
            except OperationRefused as exc:
                self.problems.append(str(exc))
                value = _UNKNOWN
            except BudgetExceeded:
                raise  # lint's own budget is spent: stop proving
            except (_Impossible, Exception):
                value = _UNKNOWN
            self.values[key] = value
        if value is _UNKNOWN:
            raise _Impossible
        return value

    def _fold(self, node: nodes.Node) -> Any:
        env: Any = self.env
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, nodes.Tuple):
            return tuple(self.fold(x) for x in node.items)
        if isinstance(node, nodes.List):
            return [self.fold(x) for x in node.items]
        if isinstance(node, nodes.Dict):
            return {self.fold(p.key): self.fold(p.value) for p in node.items}
        if isinstance(node, nodes.BinExpr):
            left, right = self.fold(node.left), self.fold(node.right)
            if node.operator in env.intercepted_binops:
                return env.call_binop(self.context, node.operator, left, right)
            return env.binop_table[node.operator](left, right)
        if isinstance(node, nodes.Neg | nodes.Pos):
            value = self.fold(node.node)
            return -value if isinstance(node, nodes.Neg) else +value
        if isinstance(node, nodes.Concat):
            return env.concat_checked(str_join, tuple(self.fold(x) for x in node.nodes))
        if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
            return self.fold(node.expr1) if self.fold(node.test) else self.fold(node.expr2)
        if isinstance(node, nodes.Getattr):
            return env.getattr(self.fold(node.node), node.attr)
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Slice):
            return env.getitem(self.fold(node.node), self.fold(node.arg))
        if isinstance(node, nodes.Name) and node.name == "range" and node.name not in self.shadowed:
            return env.globals["range"]
        if isinstance(node, nodes.Filter | nodes.Call):
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise _Impossible
            args = [self.fold(a) for a in node.args]
            kwargs: dict[str, Any] = {str(k.key): self.fold(k.value) for k in node.kwargs}
            if isinstance(node, nodes.Call):
                return env.call(self.context, self.fold(node.node), *args, **kwargs)
            filt = env.filters.get(node.name)
            if node.node is None or filt is None or getattr(filt, "needs_context", True):
                raise _Impossible
            return filt(self.context, self.fold(node.node), *args, **kwargs)
        raise _Impossible


def _length(folder: _Folder, node: nodes.Node) -> int:
    try:
        value = folder.fold(node)
    except _Impossible:
        return 0
    return len(value) if isinstance(value, range | list | tuple | str | dict) else 0


def _unconditional(body: list[nodes.Node]) -> Iterator[nodes.Node]:
    """The nodes that run every time ``body`` runs (not those behind an ``if``, a loop body, a macro)."""
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, nodes.If):
            children: list[nodes.Node] = [node.test]
        elif isinstance(node, nodes.CondExpr):
            children = [node.test]
        elif isinstance(node, nodes.And | nodes.Or):
            children = [node.left]
        elif isinstance(node, nodes.For):
            children = [node.iter]
        elif isinstance(node, nodes.Macro):
            children = []
        elif isinstance(node, nodes.CallBlock):
            children = [node.call]
        else:
            children = list(node.iter_child_nodes())
        stack.extend(reversed(children))


def _iterations(folder: _Folder, body: list[nodes.Node]) -> int:
    """A lower bound of the loop iterations one pass over ``body`` makes."""
    total = 0
    for node in _unconditional(body):
        if isinstance(node, nodes.For):
            n = _length(folder, node.iter)
            inner = _iterations(folder, node.body) if n and node.test is None else 0
            total += n * (1 + inner)
            if total > MAX_ITERATIONS:
                return total
    return total


def _written(folder: _Folder, body: list[nodes.Node]) -> int:
    """A lower bound of the characters one pass over ``body`` writes to the output."""
    total = 0
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                try:
                    value = folder.fold(child)
                except _Impossible:
                    continue
                total += len(value) if isinstance(value, str) else 0
        elif isinstance(node, nodes.For) and node.test is None:
            total += _length(folder, node.iter) * _written(folder, node.body)
        elif isinstance(node, nodes.With | nodes.Scope):
            total += _written(folder, node.body)
        if total > MAX_OUTPUT:
            break
    return total


def _loop_problems(folder: _Folder, tree: nodes.Template) -> list[str]:
    bodies = [tree.body, *(m.body for m in tree.find_all(nodes.Macro))]
    for body in bodies:
        n = _iterations(folder, body)
        if n > MAX_ITERATIONS:
            return [f"loops would run {n:,} iterations, more than the {MAX_ITERATIONS:,} a template may make"]
    written = _written(folder, tree.body)
    if written > MAX_OUTPUT:
        return [f"the template would write {written:,} characters, more than the {MAX_OUTPUT:,} a render may"]
    return []


def _recursion_problems(tree: nodes.Template) -> list[str]:
    macros = {m.name: m for m in tree.find_all(nodes.Macro)}
    calls: dict[str, list[str]] = {}
    for name, macro in macros.items():
        calls[name] = [
            n.node.name
            for n in _unconditional(macro.body)
            if isinstance(n, nodes.Call) and isinstance(n.node, nodes.Name) and n.node.name in macros
        ]
    out: list[str] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(macros):
        # Breadth-first over the calls a macro always makes: coming back to it is a cycle that never ends.
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            name = queue.popleft()
            if start in calls[name]:
                path = [name]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                if frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    cycle = " → ".join([*path, start])
                    out.append(f"macro '{start}' always calls itself ({cycle}): it can never finish")
                break
            for nxt in calls[name]:
                if nxt not in parent and nxt != start:
                    parent[nxt] = name
                    queue.append(nxt)
    return out


def budget_problems(tree: nodes.Template, env: Environment, meter: Callable[[], Meter] = Meter) -> list[str]:
    """What ``tree`` would certainly do over its budget, one message each (empty when nothing is proven)."""
    shadowed = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    folder = _Folder(env, shadowed)
    with metered(meter()):
        try:
            for node in tree.find_all((nodes.BinExpr, nodes.Concat, nodes.Filter, nodes.Call)):
                with suppress(_Impossible):
                    folder.fold(node)
            loops = _loop_problems(folder, tree)
        except (BudgetExceeded, RecursionError, MemoryError):
            loops = []  # lint's own budget is spent: what is proven so far stands
    found = [*dict.fromkeys(folder.problems), *loops, *_recursion_problems(tree)]
    return found


__all__ = ["budget_problems"]
