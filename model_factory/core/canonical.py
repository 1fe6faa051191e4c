"""Canonical JSON and the digests built on it (ARCHITECTURE §5)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel

from model_factory.contracts import VOLATILE_FIELDS


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form every digest is taken over.

    NaN and infinities are refused, naming where they are: JSON has no such numbers (Python
    would write ``NaN``, which strict parsers reject), and a document is meant to be read by
    other programs than this one."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    try:
        return _dumps(obj, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"{error}: at {_non_finite(obj)}") from None


def _dumps(obj: Any, *, allow_nan: bool) -> bytes:
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan
    )
    return text.encode()


def _non_finite(obj: Any, path: str = "$") -> str | None:
    """The JSON path of the first NaN or infinity in ``obj``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found:
            return found
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_volatile(obj: Any) -> Any:
    """Drop wall-clock and who-triggered fields at any depth (see contracts.VOLATILE_FIELDS)."""
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE_FIELDS}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def content_digest(obj: Any, *, exclude: frozenset[str] = frozenset()) -> str:
    """sha256 of the canonical JSON of what the inputs determine (volatile fields left out)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    data = strip_volatile(obj)
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    # NaN is spelled as Python wrote it before canonical_json refused it: documents stored then
    # still read back and verify; no new document can hold one
    return sha256_hex(_dumps(data, allow_nan=True))


def short_id(prefix: str, digest: str, length: int = 20) -> str:
    return f"{prefix}-{digest[:length]}"
