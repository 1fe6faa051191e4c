"""Reading contract documents with errors that name the file and the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from model_factory.errors import ModelFactoryError

M = TypeVar("M", bound=BaseModel)


def first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    field = ""
    for part in err.get("loc", ()):
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    field = field or "(document)"
    return field, err.get("msg", "invalid")


def parse_document(
    data: bytes | str | dict[str, Any],
    model: type[M],
    *,
    source: str,
    error: type[ModelFactoryError] = ModelFactoryError,
) -> M:
    """Parse JSON into a contract model, turning any failure into ``error`` naming file+field."""
    try:
        obj = data if isinstance(data, dict) else json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"not valid JSON ({exc})", source=source, field="(document)") from exc
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        field, msg = first_error(exc)
        raise error(
            f"{msg} ({exc.error_count()} problem(s) in {model.__name__})",
            source=source,
            field=field,
        ) from exc
