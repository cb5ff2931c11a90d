"""``personae test --update``: rewrite a test file's expectations from what the personas now say.

A golden transcript: each step that failed (or expected nothing yet) gets
the messages that actually followed. Steps that pass are left as written
(a ``match`` that still matches stays a ``match``), and so is everything
else in the file: comments, order, quoting (ruamel.yaml round trip).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine.persona import Persona
from ..language.source import parse_yaml
from ..language.test_schema import Step
from .persona_tests import CaseResult, Said, rule_matches

_TEXT_KEYS = ("reply", "match", "one_of")
_SHORTHAND = ("from", "reply", "match", "one_of", "rule", "pieces", "nothing", "expect")


def update_file(path: Path, results: Sequence[CaseResult], personas: Mapping[str, Persona]) -> int:
    """Rewrite the expectations of ``path`` from ``results`` (of its tests); returns how many steps changed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long reply onto several lines
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout of personae's own files ("  - " under a key)
    text = path.read_text(encoding="utf-8")
    doc = yaml.load(text)
    changed = 0
    for result in results:
        case = result.case
        steps = doc["tests"][case.index]["steps"]
        failing = {f.step for f in result.failures if f.fixable}
        for k, step in enumerate(case.steps):
            node = steps[k]
            missing = step.expectations() is None
            if k not in failing and not missing:
                continue
            said, state, many = result.said[k], result.states[k], len(case.personas) > 1
            if _rewrite(node, step, said, state, many, missing, personas):
                changed += 1
    if changed:
        out = io.StringIO()
        yaml.dump(doc, out)
        parse_yaml(out.getvalue(), str(path))  # what is written must read back (raises PersonaeError if not)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(out.getvalue(), encoding="utf-8")
        tmp.replace(path)  # never a half-written test file
    return changed


def _rewrite(
    node: Any,
    step: Step,
    said: list[Said],
    state: Mapping[str, Any],
    many: bool,
    missing: bool,
    personas: Mapping[str, Persona],
) -> bool:
    before = repr(node)
    # The blank line (or comment) after a step belongs to its last key: keep it after the step.
    last = next(reversed(node), None)
    tail = node.ca.items.pop(last, None) if last is not None else None
    try:
        return _apply(node, step, said, state, many, missing, personas, before)
    finally:
        end = next(reversed(node), None)
        if tail is not None and end is not None:
            if isinstance(node[end], list) and node[end]:
                node[end][-1].ca.items.setdefault(next(reversed(node[end][-1])), tail)
            else:
                node.ca.items[end] = tail


def _apply(
    node: Any,
    step: Step,
    said: list[Said],
    state: Mapping[str, Any],
    many: bool,
    missing: bool,
    personas: Mapping[str, Persona],
    before: str,
) -> bool:
    for key, value in state.items():
        node["state"][key] = value
    expected = step.expectations()
    if missing or expected is None or len(expected) != len(said):
        keep_rule = any(e.rule is not None for e in expected or [])
        keep_pieces = any(e.pieces is not None for e in expected or [])
        for key in _SHORTHAND:
            if key in node:
                del node[key]
        if not said:
            node["nothing"] = True
        elif len(said) == 1:
            _fill(node, said[0], many, keep_rule, keep_pieces, text_key=None)
        else:
            from ruamel.yaml.comments import CommentedMap

            items = []
            for s in said:
                item = CommentedMap()
                _fill(item, s, True, keep_rule, keep_pieces, text_key=None)
                items.append(item)
            node["expect"] = items
        return repr(node) != before
    targets = node["expect"] if step.expect is not None else [node] * len(said)
    for target, e, s in zip(targets, expected, said, strict=True):
        if e.from_ is not None and e.from_ != s.persona:
            target["from"] = s.persona
        if not _text_ok(e, s.text):
            for key in _TEXT_KEYS:
                if key in target:
                    del target[key]
            target["reply"] = s.text
        if e.rule is not None and not rule_matches(e.rule, s, personas):
            target["rule"] = s.rule
        if e.pieces is not None and e.pieces != s.pieces:
            target["pieces"] = s.pieces
    return repr(node) != before


def _fill(node: Any, s: Said, many: bool, rule: bool, pieces: bool, text_key: str | None) -> None:
    if many:
        node["from"] = s.persona
    node[text_key or "reply"] = s.text
    if rule:
        node["rule"] = s.rule
    if pieces:
        node["pieces"] = s.pieces


def _text_ok(e: Any, text: str) -> bool:
    import re

    if e.reply is not None:
        return bool(e.reply == text)
    if e.match is not None:
        return re.search(e.match, text) is not None
    if e.one_of is not None:
        return text in e.one_of
    return True
