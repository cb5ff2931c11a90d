"""Rows travel to SQLite as one JSON parameter per batch; the helpers that pack and unpack them."""

from __future__ import annotations

from collections.abc import Sequence

_ISO = "'%Y-%m-%dT%H:%M:%f+00:00'"


def unpack(param: str, fields: Sequence[str], times: Sequence[str] = ()) -> str:
    """A ``WITH`` clause giving a table ``rows(k, <fields>)`` from a JSON array of arrays.

    Rows travel as one JSON parameter per batch: SQLite unpacks it in C with
    the GIL released, where binding thousands of parameters one by one would
    hold the GIL on the writer thread. Each element's text is materialized
    once (``raw``): ``json_each`` renders an element anew every time its
    ``value`` is read, so reading it once per field cost a third of every
    insert. Times travel as epoch seconds and become ISO 8601 text here.
    """
    columns = ", ".join(
        f"strftime({_ISO}, json_extract(v, '$[{i}]'), 'unixepoch') AS {name}"
        if name in times
        else f"json_extract(v, '$[{i}]') AS {name}"
        for i, name in enumerate(fields)
    )
    return (
        f"WITH raw(k, v) AS MATERIALIZED (SELECT key, value FROM json_each({param})),"
        f" rows AS (SELECT k, {columns} FROM raw) "
    )
