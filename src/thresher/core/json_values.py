"""Records' values as JSON: parsed keeping integers of any size, written at any depth and with what JSON has no
type for (Parquet's bytes, times, decimals)."""

from __future__ import annotations

import base64
import json
import re
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson

LONG_INTEGER = re.compile("[0-9]{19}")  # an integer this long may lie beyond the 64 bits orjson reads exactly
LONG_INTEGER_BYTES = re.compile(LONG_INTEGER.pattern.encode())


def load_json(data: bytes | bytearray | str) -> Any:
    """JSON ``data``'s value, parsed by orjson; where it may hold an integer beyond 64 bits (which orjson reads as a
    float) by the standard library, which keeps it exact. Raises ``orjson.JSONDecodeError`` as orjson does."""
    value = orjson.loads(data)
    long = LONG_INTEGER.search(data) if isinstance(data, str) else LONG_INTEGER_BYTES.search(data)
    if long:
        try:
            return json.loads(data)
        except RecursionError:  # deeper than the standard library reads: orjson's value, its integers 64-bit
            pass
    return value


def json_text(value: object) -> str:
    """``value``'s compact JSON text, at any depth (orjson reads 1,024 levels, writes 255) and integers of any size,
    with what JSON has no type for as :func:`_json_value` writes it."""
    try:
        return orjson.dumps(value, default=_json_value).decode()
    except orjson.JSONEncodeError:
        return _deep_json(value)


def _json_value(value: object) -> object:
    """What JSON has no type for, as Parquet columns give it: bytes as base64, a time (pandas' too: ``Timestamp``)
    in ISO 8601, a duration in seconds; anything else (a decimal: its digits) as ``str``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _deep_json(value: object) -> str:
    """Compact JSON text of a value nested too deep for orjson, written without recursion."""
    out: list[str] = []
    todo: list[object] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, _Text):
            out.append(item)
        elif isinstance(item, (dict, list)):
            pieces: list[object] = [_Text("{" if isinstance(item, dict) else "[")]
            for i, entry in enumerate(item.items() if isinstance(item, dict) else item):
                pieces += [_Text(",")] if i else []
                pieces += (
                    [_Text(orjson.dumps(entry[0]).decode() + ":"), entry[1]] if isinstance(item, dict) else [entry]
                )
            pieces.append(_Text("}" if isinstance(item, dict) else "]"))
            todo += reversed(pieces)
        elif isinstance(item, int) and not isinstance(item, bool) and not -(1 << 63) <= item < 1 << 64:
            out.append(str(item))  # beyond the 64 bits orjson writes
        else:
            out.append(orjson.dumps(item, default=_json_value).decode())
    return "".join(out)


class _Text(str):
    """A piece of JSON text already written (``_deep_json``)."""
