"""Typer's option coercion for jinaloc's plain option types, without importing pydantic.

Typer (0.2x) turns every option value into its annotated type through a pydantic
`TypeAdapter`, built the first time a value is coerced; importing pydantic for that was
about a third of a warm `jinaloc search`'s start-up (docs/benchmarks.md 8c). A value that a
plain conversion takes exactly as that adapter does (any str; a decimal int or float within
the option's range; a path, checked by typer's own path check) is converted here. Anything
else (a bad or out-of-range value, another type) goes to typer's own coercion, so every
error reads as it did. With a Typer that coerces otherwise, `install` changes nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

try:
    import typer.core as typer_core
    from typer._coercion import RuntimeParam
    from typer._coercion import build_runtime_param as typer_build
    from typer._param_types import coerce_cli_path
except ImportError:  # another Typer: its own coercion throughout
    RuntimeParam = None

_NUMBER = {
    int: re.compile(r"-?(?:0|[1-9][0-9]*)"),
    float: re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"),
}
_TYPER = object()  # "leave it to typer"


def _convert(annotation, value, info, param, ctx):
    """`value` as `annotation`, or _TYPER when typer's own coercion must decide."""
    if annotation in (str, bool):
        return value if type(value) is annotation else _TYPER
    if annotation in _NUMBER:
        if type(value) is annotation:  # a default
            number = value
        elif isinstance(value, str) and _NUMBER[annotation].fullmatch(value):
            number = annotation(value)
        else:
            return _TYPER
        if info.clamp or not (
            (info.min is None or number >= info.min) and (info.max is None or number <= info.max)
        ):
            return _TYPER  # typer says why
        return number
    if annotation is Path and info.path_type is None and isinstance(value, str) and value:
        # What typer's adapter does once pydantic has made the str a Path.
        return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
    if getattr(annotation, "__origin__", None) is list and isinstance(value, (list, tuple)):
        (item_type,) = annotation.__args__
        items = [_convert(item_type, item, info, param, ctx) for item in value]
        return _TYPER if any(item is _TYPER for item in items) else items
    return _TYPER


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainRuntimeParam(RuntimeParam):
        def _coerce_value(self, value, param, ctx):
            got = _convert(self.annotation, value, self.parameter_info, param, ctx)
            if got is _TYPER:
                return typer_build(param.type_descriptor)._coerce_value(value, param, ctx)
            return got


def _build(descriptor):
    """typer's `build_runtime_param`, with plain coercion first where it may apply."""
    if descriptor.file_annotation is not None or descriptor.parameter_info.parser is not None:
        return typer_build(descriptor)
    return PlainRuntimeParam(
        parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
    )


def install() -> None:
    """Every option Typer coerces from now on tries the plain conversion first (Typer
    builds each option's coercion on first use, through `typer.core.build_runtime_param`)."""
    if RuntimeParam is not None:
        typer_core.build_runtime_param = _build
