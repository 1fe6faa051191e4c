"""The launchpad's TrainingConfig: a dg.Config generated from the contract, so the two never drift.

Every field keeps the contract's default and description, so the UI documents itself and
schedules and backfills need no config at all.
"""

from __future__ import annotations

import typing
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, ValidationError, create_model

from model_factory.contracts import TrainingConfig as TrainingConfigContract
from model_factory.core.documents import first_error
from model_factory.errors import ConfigError


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _as_config(model: type[BaseModel], defaults: BaseModel | None, name: str) -> type[dg.Config]:
    """A dg.Config twin of ``model``; nested models become nested Configs whose fields default to
    the contract's default values (Dagster reads defaults per field, not from factories)."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name == "schema_version":
            continue
        ann = info.annotation
        default = (
            getattr(defaults, field_name)
            if defaults is not None
            else info.get_default(call_default_factory=True)
        )
        args = typing.get_args(ann)
        if _is_model(ann):
            sub = _as_config(ann, default, name + _camel(field_name))
            fields[field_name] = (sub, Field(default=sub(), description=info.description))
        elif _optional_model(ann):
            sub = _as_config(_optional_model(ann), None, name + _camel(field_name))
            fields[field_name] = (sub | None, Field(default=None, description=info.description))
        elif typing.get_origin(ann) is list and args and _is_model(args[0]):
            sub = _as_config(args[0], None, args[0].__name__)
            items = [d.model_dump() for d in default]
            # plain dicts: Dagster turns a nested Config's default into config values, and a
            # list of Config objects inside it is not one
            fields[field_name] = (
                list[sub],
                Field(
                    default_factory=lambda i=items: [dict(d) for d in i],
                    description=info.description,
                ),
            )
        else:
            kwargs = _field_kwargs(info)
            if defaults is not None:  # the enclosing default's value replaces any factory
                kwargs.pop("default_factory", None)
                kwargs["default"] = default
            fields[field_name] = (_dagster_type(ann), Field(**kwargs))
    return create_model(name, __base__=dg.Config, __doc__=model.__doc__, **fields)


def _dagster_type(ann: Any) -> Any:
    """Dagster's config maps take str keys only: ``dict[Literal[...], V]`` becomes ``dict[str, V]``
    on the launchpad, and the contract checks the keys when the run builds its TrainingConfig."""
    if typing.get_origin(ann) is dict:
        key, value = typing.get_args(ann)
        if key is not str:
            return dict[str, value]
    return ann


def _optional_model(ann: Any) -> type[BaseModel] | None:
    """``Model | None`` -> Model (an optional nested section such as the gate override)."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(ann) and _is_model(args[0]):
        return args[0]
    return None


_BOUNDS = {
    "ge": ">=",
    "gt": ">",
    "le": "<=",
    "lt": "<",
    "min_length": "length >=",
    "max_length": "length <=",
    "pattern": "matching",
}


def _field_kwargs(info) -> dict[str, Any]:
    """Keep a contract field's default and description; its bounds go into the description.

    Not into the Config itself: pydantic would enforce them when Dagster builds the Config, so a
    value out of range failed the step with pydantic's raw ValidationError, before to_contract
    could name the field as a ConfigError (the launchpad's schema has no bounds to show anyway).
    """
    bounds = [
        f"{sign} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, sign in _BOUNDS.items()
        if getattr(meta, attr, None) is not None
    ]
    description = info.description or ""
    if bounds:
        description = f"{description} ({', '.join(bounds)})".strip()
    kwargs: dict[str, Any] = {"description": description or None}
    if info.default_factory is not None:
        kwargs["default_factory"] = info.default_factory
    elif not info.is_required():
        kwargs["default"] = info.default
    return kwargs


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


TrainingConfig = _as_config(TrainingConfigContract, None, "TrainingConfig")
TrainingConfig.__module__ = __name__


def to_contract(config: dg.Config) -> TrainingConfigContract:
    """The launchpad config as the contract (the one whose canonical hash is the config_hash).

    Every rule of the contract (bounds, patterns, cross-field rules) is checked here, before any
    input is read, and a break is a ConfigError naming the field.
    """
    try:
        # List defaults are plain dicts (see above); the contract validates them, so pydantic's
        # "expected a Config" serializer notice for them is noise.
        return TrainingConfigContract.model_validate(config.model_dump(warnings=False))
    except ValidationError as exc:
        field, message = first_error(exc)  # the same field a config file's error names
        more = exc.error_count() - 1
        raise ConfigError(
            f"invalid TrainingConfig: {message}"
            + (f" (and {more} more problem(s))" if more else ""),
            field=field,
        ) from exc
