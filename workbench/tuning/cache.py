"""Cache keys of tuned folders: a short hash of a JSON-able payload (the config and all the result depends on)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["payload_hash"]


def payload_hash(payload: Any, length: int = 10) -> str:
    """The first ``length`` hex digits of the sha1 of ``payload`` as sorted JSON.

    >>> payload_hash({"b": 1, "a": [1, 2]}) == payload_hash({"a": [1, 2], "b": 1})
    True
    >>> len(payload_hash("x", length=6))
    6
    """
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]
