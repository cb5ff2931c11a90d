"""Read YAML files safely and remember where every key and value came from.

Every later error (schema, template, regex) is reported at ``file:line:col``,
so the loader keeps a map from data paths to the positions of their nodes.
"""

from __future__ import annotations

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
            "warning" if severity == "warning" else "error",
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
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line, col = _text_line_col(text, exc.position)
        raise _fail(name, line, col, f"invalid YAML: unacceptable character U+{exc.character:04X}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise _fail(name, 1, 1, "file is empty")
        source = Source(name, None)
        _index(node, (), source, name, _Counter())
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        line, col = _text_line_col(text, exc.position)
        raise _fail(name, line, col, f"invalid YAML: unacceptable character U+{exc.character:04X}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise _fail(name, line, col, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(name, 1, 1, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _fail(name, 1, 1, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return Source(name, data, source.values, source.keys, source.styles)


def load_yaml(path: Path, *, display: str | None = None) -> Source:
    """Read and parse a YAML file (see :func:`parse_yaml`)."""
    name = display or str(path)
    return parse_yaml(read_text(path, display=name), name)


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


def _index(node: yaml.Node, path: DataPath, src: Source, name: str, count: _Counter) -> None:
    count.n += 1
    if count.n > MAX_NODES:
        raise _fail(
            name,
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            f"document has more than {MAX_NODES} nodes (alias expansion?)",
        )
    src.values[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        src.styles[path] = node.style
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str | int, yaml.Node] = {}
        for key_node, value_node in _pairs(node):
            key = _key_of(key_node)
            if key is None:
                raise _fail(
                    name,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    "mapping keys must be plain scalars",
                )
            if key in seen and key != "<<":
                first = seen[key].start_mark.line + 1
                raise _fail(
                    name,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    f"{format_path((*path, key))}: duplicate key '{key}' (first defined at line {first})",
                )
            seen[key] = key_node
            child = (*path, key)
            src.keys[child] = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _index(value_node, child, src, name, count)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), src, name, count)


def _pairs(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    yield from node.value
