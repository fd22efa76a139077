"""JSON text written on the hot paths (log lines, the job list and detail answers) with
`orjson`, about ten times faster than the standard library's encoder (a log line: 0.23 us
against 2.7 us; the engine writes one per attempt, the API renders a job per request).

What `orjson` refuses (an integer beyond 64 bits, a string with a lone surrogate, a value of a
type it does not know and `default` cannot turn into one) is written by the standard library
instead, as before, so nothing that could be written before fails now. Only for writing: reading
stays with the standard library, since `orjson` reads an integer beyond 64 bits as a float,
which would change a customer's data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

# A dataclass goes to `default` as every other unknown type, as with the standard library:
# orjson would write its fields itself, those declared `repr=False` too (a dial request's
# callback secret, an endpoint's signing secret), where `default=repr` hides them.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    """`obj` as compact JSON text. `default` turns what JSON cannot hold into what it can (as
    for `json.dumps`); other keyword arguments (structlog passes its own) are ignored."""
    try:
        return orjson.dumps(obj, default=default, option=_OPTIONS).decode()
    except TypeError:
        return json.dumps(obj, default=default, separators=(",", ":"))
