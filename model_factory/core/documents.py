"""Reading contract documents with errors that name the file and the field."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from model_factory.errors import ModelFactoryError

M = TypeVar("M", bound=BaseModel)


# A rule across fields (a model validator) has no location of its own: its message starts with
# the field it is about ("row_count: ..."), which becomes the field named.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?"
_FIELD_FIRST = re.compile(rf"^Value error, ({_NAME}(?:\.{_NAME})*): (.+)$", re.S)


def _misspelt(errors: list[Any]) -> tuple[Any, str] | None:
    """An unknown key beside a required one it nearly spells (``time_colum`` for
    ``time_column``): the typo, and the name meant. Pydantic reports the missing field first,
    which names a field the file does not hold and hides the key it does."""
    missing = [tuple(e["loc"]) for e in errors if e["type"] == "missing"]
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err["type"] != "extra_forbidden" or not loc or not isinstance(loc[-1], str):
            continue
        siblings = [m[-1] for m in missing if m[:-1] == loc[:-1] and isinstance(m[-1], str)]
        close = difflib.get_close_matches(loc[-1], siblings, n=1)
        if close:
            return err, close[0]
    return None


def first_error(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors()
    typo = _misspelt(errors)
    err = typo[0] if typo else errors[0]
    field = ""
    for part in err.get("loc", ()):
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    if typo:
        return field, f"not a field of this document: did you mean '{typo[1]}'?"
    msg = err.get("msg", "invalid")
    named = _FIELD_FIRST.match(msg)
    if named:
        name = named.group(1)
        # a field validator's own field is in the location already (perhaps without the index)
        last = re.split(r"[.\[]", field)[-1] if field else ""
        if field and last == name.split("[")[0]:
            field = field[: len(field) - len(last)] + name
        else:
            field = f"{field}.{name}" if field else name
        msg = named.group(2)
    return field or "(document)", msg


def require_object(
    obj: Any, *, source: str, error: type[ModelFactoryError] = ModelFactoryError
) -> dict[str, Any]:
    """``obj`` if it is a JSON object; every contract document is one at its top level."""
    if not isinstance(obj, dict):
        raise error(
            f"expected a JSON object at the top level, found {_json_kind(obj)}",
            source=source,
            field="(document)",
        )
    return obj


def _json_kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string (a document encoded twice?)"
    if isinstance(obj, list):
        return "an array"
    return type(obj).__name__


def parse_document(
    data: bytes | str | dict[str, Any],
    model: type[M],
    *,
    source: str,
    error: type[ModelFactoryError] = ModelFactoryError,
) -> M:
    """Parse JSON into a contract model, turning any failure into ``error`` naming file+field."""
    obj: Any = data
    # Text is decoded exactly once: JSON that decodes to a string is a document encoded twice,
    # refused below like any other top level that is not an object.
    if isinstance(data, str | bytes | bytearray):
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise error(f"not valid JSON ({exc})", source=source, field="(document)") from exc
    require_object(obj, source=source, error=error)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        field, msg = first_error(exc)
        raise error(
            f"{msg} ({exc.error_count()} problem(s) in {model.__name__})",
            source=source,
            field=field,
        ) from exc
