"""The config reference as Markdown, generated from the pydantic models so it cannot drift."""

from __future__ import annotations

import types
import typing
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from murmura.config import Config

_BOUNDS = ((Gt, "gt", "> {}"), (Ge, "ge", ">= {}"), (Lt, "lt", "< {}"), (Le, "le", "<= {}"))


def _type_name(annotation: Any) -> str:
    """A short, readable form of a field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " (optional)"
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("|", "\\|")


def _allowed(field: Any) -> str:
    """Type plus numeric bounds, e.g. ``float, > 0``."""
    parts = [_type_name(field.annotation)]
    for meta in field.metadata:
        for kind, attr, fmt in _BOUNDS:
            if isinstance(meta, kind):
                parts.append(fmt.format(getattr(meta, attr)))
    return ", ".join(parts)


def _default(field: Any) -> str:
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    return "unset" if value is None else f"`{value!r}`".replace("'", '"')


def _tables() -> list[tuple[str, type[BaseModel]]]:
    """The run config's tables, then ``[server]``, which only ``murmura server`` reads."""
    from murmura.node.deploy import ServerSection

    tables: list[tuple[str, type[BaseModel]]] = []
    for table, section in Config.model_fields.items():
        model = section.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        tables.append((table, model))
    return [*tables, ("server", ServerSection)]


def config_reference() -> str:
    """Every table and key of the run config and ``[server]``, with defaults and allowed values."""
    lines: list[str] = []
    for table, model in _tables():
        doc = " ".join((model.__doc__ or "").split()).split(": ", 1)[-1]
        lines += [f"### `[{table}]`", "", doc, "", "| key | default | allowed |", "|---|---|---|"]
        for key, field in model.model_fields.items():
            lines.append(f"| `{key}` | {_default(field)} | {_allowed(field)} |")
        lines.append("")
    return "\n".join(lines)


BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def update_readme(path: str) -> bool:
    """Rewrite the generated block of ``path``; return True if it changed."""
    with open(path) as fh:
        text = fh.read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{config_reference()}{END}{tail}"
    if new != text:
        with open(path, "w") as fh:
            fh.write(new)
    return new != text


if __name__ == "__main__":
    import sys

    update_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md")
