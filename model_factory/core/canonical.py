"""Canonical JSON and the digests built on it (ARCHITECTURE §5)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from model_factory.contracts import VOLATILE_FIELDS


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form every digest is taken over."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
    return sha256_hex(canonical_json(data))


def short_id(prefix: str, digest: str, length: int = 20) -> str:
    return f"{prefix}-{digest[:length]}"
