"""The launchpad's TrainingConfig: a dg.Config generated from the contract, so the two never drift.

Every field keeps the contract's default and description, so the UI documents itself and
schedules and backfills need no config at all.
"""

from __future__ import annotations

import typing
from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, create_model

from model_factory.contracts import TrainingConfig as TrainingConfigContract


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
        default = (getattr(defaults, field_name) if defaults is not None
                   else info.get_default(call_default_factory=True))
        args = typing.get_args(ann)
        if _is_model(ann):
            sub = _as_config(ann, default, name + _camel(field_name))
            fields[field_name] = (sub, Field(default=sub(), description=info.description))
        elif typing.get_origin(ann) is list and args and _is_model(args[0]):
            sub = _as_config(args[0], None, args[0].__name__)
            items = [d.model_dump() for d in default]
            fields[field_name] = (list[sub], Field(default_factory=lambda s=sub, i=items: [s(**d) for d in i],
                                                   description=info.description))
        else:
            kwargs = {"default": default} if defaults is not None else {}
            fields[field_name] = (ann, Field(**{**_field_kwargs(info), **kwargs}))
    return create_model(name, __base__=dg.Config, __doc__=model.__doc__, **fields)


def _field_kwargs(info) -> dict[str, Any]:
    """Keep a contract field's default, description and constraints."""
    kwargs: dict[str, Any] = {"description": info.description}
    if info.default_factory is not None:
        kwargs["default_factory"] = info.default_factory
    elif not info.is_required():
        kwargs["default"] = info.default
    for meta in info.metadata:
        for attr in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            if getattr(meta, attr, None) is not None:
                kwargs[attr] = getattr(meta, attr)
    return kwargs


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


TrainingConfig = _as_config(TrainingConfigContract, None, "TrainingConfig")
TrainingConfig.__module__ = __name__


def to_contract(config: dg.Config) -> TrainingConfigContract:
    """The launchpad config as the contract (the one whose canonical hash is the config_hash)."""
    return TrainingConfigContract.model_validate(config.model_dump())


