"""Strict JSON for request bodies: anything that would later fail to store, encode or nest
answers `invalid_json` here instead of a 500 further down.

Rejected: invalid UTF-8 or syntax, `NaN`/`Infinity` (and numbers that overflow to them),
integers of more than `MAX_INTEGER_DIGITS` digits, nesting deeper than `MAX_DEPTH`, more than
`MAX_CONTAINERS` objects and arrays, an object of more than `MAX_KEYS` keys, lone UTF-16
surrogates (`"\\udfff"`) in keys or values, which no UTF-8 encoder accepts, and NUL characters
(`"\\u0000"`), which SQLite's JSON functions and C strings end a text at (a contact field
`k\\u0000ey` showed as `k` in the export).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 100
# Objects and arrays in a body: the largest valid one (20,000 rows of a few nested objects
# each) has well under this. An 8 MB body of `{},` would make 2.7 million dicts, hundreds of
# MB and seconds of work before any check could refuse it; counting brackets first (a bound:
# brackets inside strings count too) costs a few ms.
MAX_CONTAINERS = 250_000

# Keys of one object: no body the API takes has an object of more (a contact has at most
# intake.MAX_COLUMNS fields). An 8 MB body of one object of 700,000 unknown keys was refused
# only after pydantic had listed each as a problem: 600 MB and seconds of the event loop.
MAX_KEYS = 1_000

_BAD_CHARACTER = re.compile("[\ud800-\udfff\x00]")


class BadJson(ValueError):
    """The body cannot be accepted as JSON; the message says why."""


def _constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson("number is too large")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BadJson(f"integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def loads(raw: bytes) -> Any:
    """Parse and check a request body; raise BadJson with a short reason."""
    if raw.count(b"{") + raw.count(b"[") > MAX_CONTAINERS:
        raise BadJson(f"more than {MAX_CONTAINERS} objects and arrays")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise BadJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except BadJson:
        raise
    except ValueError:  # JSONDecodeError, and int() limits
        raise BadJson("not valid JSON") from None
    check(value)
    return value


def check(value: Any) -> None:
    """Depth, surrogate and NUL checks over a parsed value, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _BAD_CHARACTER.search(item):
                raise BadJson("string contains a lone UTF-16 surrogate or a NUL character")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise BadJson(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                if len(item) > MAX_KEYS:
                    raise BadJson(f"an object has more than {MAX_KEYS} keys")
                for key, sub in item.items():
                    if _BAD_CHARACTER.search(key):
                        raise BadJson("key contains a lone UTF-16 surrogate or a NUL character")
                    if isinstance(sub, str | dict | list):
                        stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item if isinstance(sub, str | dict | list))
