"""Read YAML files safely and remember where every key and value came from.

Every later error (schema, template, regex) is reported at ``file:line:col``,
so the loader keeps a map from data paths to the positions of their nodes.
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Diagnostic, PersonaeError, format_path

#: Persona and timeline files are hand-written; anything this big is a mistake.
MAX_BYTES = 2 * 1024 * 1024
#: Bounds alias expansion ("billion laughs") before anything is constructed.
MAX_NODES = 200_000
#: Deeper nesting is refused where it happens (the composer and the constructor recurse).
MAX_DEPTH = 100

DataPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class Source:
    """A parsed document plus the positions of its keys and values."""

    file: str
    data: Any
    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)
    styles: dict[DataPath, str | None] = field(default_factory=dict)

    def where(self, path: DataPath, *, key: bool = False) -> Position:
        """Position of the value (or key) at ``path``, or of its nearest known ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if key and probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), Position(1, 1))

    def diagnostic(
        self,
        path: DataPath,
        message: str,
        *,
        key: bool = False,
        severity: str = "error",
        line_offset: int = 0,
        column: int | None = None,
    ) -> Diagnostic:
        """A :class:`Diagnostic` located at ``path`` in this file."""
        pos = self.where(path, key=key)
        return Diagnostic(
            self.file,
            pos.line + line_offset,
            column if column is not None else pos.column,
            format_path(path),
            message,
            "note" if severity == "note" else "warning" if severity == "warning" else "error",
        )


def _fail(file: str, line: int, column: int, message: str) -> PersonaeError:
    return PersonaeError([Diagnostic(file, line, column, "", message)])


def read_text(path: Path, *, display: str | None = None) -> str:
    """Read a UTF-8 text file, refusing binary, oversized and unreadable files clearly."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise _fail(name, 1, 1, f"file is too large ({size / 1e6:.1f} MB; the limit is {MAX_BYTES // 2**20} MiB)")
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(name, 1, 1, f"cannot read file: {exc.strerror or exc}") from None
    return decode_text(raw, name)


def decode_text(raw: bytes, name: str) -> str:
    """Decode ``raw`` as UTF-8 text, with a positioned error for binary content."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, col = _line_col(raw, nul)
        raise _fail(name, line, col, "file is binary, not YAML text (NUL byte)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        raise _fail(name, line, col, "file is not UTF-8 text (binary?)") from None
    return text


def _text_line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _line_col(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def parse_yaml(text: str, name: str) -> Source:
    """Parse one YAML document into plain data plus a position map."""
    if not text.strip():
        raise _fail(name, 1, 1, "file is empty")
    if _fast_path(text):
        try:
            return _parse(_CLoader(text), name)
        except Exception:  # e.g. PyYAML's AttributeError on '!!timestamp' over a non-date
            pass  # the pure-Python loader below reports the problem, at its position
    try:
        loader = _Loader(text, name)
    except yaml.reader.ReaderError as exc:
        line, col = _text_line_col(text, exc.position)
        raise _fail(name, line, col, f"invalid YAML: unacceptable character U+{exc.character:04X}") from None
    try:
        return _parse(loader, name)
    except yaml.reader.ReaderError as exc:
        line, col = _text_line_col(text, exc.position)
        raise _fail(name, line, col, f"invalid YAML: unacceptable character U+{exc.character:04X}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _text_line_col(text, mark.index) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _fail(name, line, col, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(name, 1, 1, f"invalid YAML: {exc}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH and the alias checks come first
        raise _fail(name, 1, 1, "invalid YAML: nested too deeply") from None
    except PersonaeError:
        raise
    except Exception as exc:  # a value PyYAML cannot construct and _index did not foresee
        raise _fail(name, 1, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _parse(loader: _Loader | _CLoader, name: str) -> Source:
    node = loader.get_single_node()
    if node is None:
        raise _fail(name, 1, 1, "file is empty")
    source = Source(name, None)
    _index(node, (), source, name, _Counter(), loader)
    data = loader.construct_document(node)
    return Source(name, data, source.values, source.keys, source.styles)


def _fast_path(text: str) -> bool:
    """Whether libyaml may compose ``text``: no anchors (aliases are checked for recursion
    and bombs as they are composed, in Python) and no line break but ``\n`` (its line
    numbers then match ours). Anything it refuses is parsed again in Python, for the
    diagnostic. libyaml composes a 10,000-rule persona about ten times faster.
    """
    return yaml.__with_libyaml__ and "&" not in text and not _OTHER_BREAKS.search(text)


_OTHER_BREAKS = re.compile("[\r\x85\u2028\u2029]")


class _CLoader(yaml.CSafeLoader):
    """libyaml's safe loader, with positions as :class:`_Loader` gives them."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def at(self, mark: yaml.Mark) -> tuple[int, int]:
        """1-based line and column of ``mark`` (libyaml counts characters, and '\n' is the only break)."""
        return mark.line + 1, mark.column + 1

    def position(self, node: yaml.Node) -> Position:
        """Where ``node`` starts."""
        return Position(*self.at(node.start_mark))


def load_yaml(path: Path, *, display: str | None = None) -> Source:
    """Read and parse a YAML file (see :func:`parse_yaml`)."""
    name = display or str(path)
    return parse_yaml(read_text(path, display=name), name)


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing deep nesting and recursive aliases where they occur."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self._name = name
        self._depth = 0
        self._open: set[str] = set()  # anchors of the collections being composed
        # PyYAML also breaks lines at U+0085, U+2028, U+2029 and a lone CR; editors and
        # ``file:line:col`` count '\n' only, so positions are recomputed from the offset.
        self._breaks = [i for i, ch in enumerate(text) if ch == "\n"]

    def at(self, mark: yaml.Mark) -> tuple[int, int]:
        """1-based line and column of ``mark``, counting '\n' as the only line break."""
        line = bisect.bisect_left(self._breaks, mark.index)
        start = self._breaks[line - 1] + 1 if line else 0
        return line + 1, mark.index - start + 1

    def position(self, node: yaml.Node) -> Position:
        """Where ``node`` starts."""
        return Position(*self.at(node.start_mark))

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open:
            raise _fail(self._name, *self.at(mark), f"recursive alias '*{event.anchor}'")
        anchor = getattr(event, "anchor", None) if not isinstance(event, yaml.AliasEvent) else None
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _fail(self._name, *self.at(mark), f"nested too deeply (more than {MAX_DEPTH} levels)")
        if anchor:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor or "")


_NUMBERS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


def _check_scalar(node: yaml.ScalarNode, loader: _Loader | _CLoader, name: str) -> None:
    """Construct a number now, so one PyYAML cannot read is reported at its own position."""
    if node.tag == _TIMESTAMP:
        try:
            loader.construct_object(node)
        except (ValueError, AttributeError, TypeError):  # PyYAML's AttributeError when an explicit tag lies
            raise _fail(name, *loader.at(node.start_mark), f"cannot read '{node.value[:40]}' as a date") from None
        return
    if node.tag not in _NUMBERS:
        return
    try:
        loader.construct_object(node)
    except ValueError as exc:
        digits = sum(ch.isalnum() for ch in node.value)
        too_long = "limit" in str(exc) and digits > sys.get_int_max_str_digits()
        message = (
            f"number too long ({digits} digits; the limit is {sys.get_int_max_str_digits()})"
            if too_long
            else f"cannot read number '{node.value[:40]}': {exc}"
        )
        raise _fail(name, *loader.at(node.start_mark), message) from None


class _Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _key_of(node: yaml.Node) -> str | int | None:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:int":
            try:
                return int(node.value)
            except ValueError:
                return str(node.value)
        return str(node.value)
    return None


def _index(
    node: yaml.Node, path: DataPath, src: Source, name: str, count: _Counter, loader: _Loader | _CLoader
) -> None:
    if len(path) >= MAX_DEPTH:
        raise _fail(name, *loader.at(node.start_mark), f"nested too deeply (more than {MAX_DEPTH} levels)")
    count.n += 1
    if count.n > MAX_NODES:
        raise _fail(name, *loader.at(node.start_mark), f"document has more than {MAX_NODES} nodes (alias expansion?)")
    src.values[path] = loader.position(node)
    if isinstance(node, yaml.ScalarNode):
        src.styles[path] = node.style or None  # libyaml says "" for plain, PyYAML None
        _check_scalar(node, loader, name)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str | int, yaml.Node] = {}
        for key_node, value_node in _pairs(node):
            key = _key_of(key_node)
            if key is None:
                raise _fail(name, *loader.at(key_node.start_mark), "mapping keys must be plain scalars")
            if key in seen and key != "<<":
                first = loader.position(seen[key]).line
                raise _fail(
                    name,
                    *loader.at(key_node.start_mark),
                    f"{format_path((*path, key))}: duplicate key '{key}' (first defined at line {first})",
                )
            seen[key] = key_node
            child = (*path, key)
            src.keys[child] = loader.position(key_node)
            _index(value_node, child, src, name, count, loader)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), src, name, count, loader)


def _pairs(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    yield from node.value
