"""The data schema of a job: what every site's local data must look like.

A job describes its data once, in ``[task.args.schema]``; each site points that schema at its
own files (``murmura.data.sources``) and checks them against it before any round
(``murmura.data.validate``). Tabular: feature columns, numeric or categorical with their
categories, and a label column with its classes (or ``regression = true``). Images: size,
channels and classes (the class sub-folder names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from murmura.errors import ConfigError

Category = str | int | float


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature column: numeric, or categorical with its ``categories`` (one-hot encoded).

    ``impute`` replaces a missing value (NaN, an empty cell); without it a missing value
    refuses the file.
    """

    name: str
    categories: tuple[Category, ...] = ()
    impute: Category | None = None

    @property
    def categorical(self) -> bool:
        """True when the column holds one of ``categories``."""
        return bool(self.categories)

    @property
    def width(self) -> int:
        """Columns it takes in the encoded matrix: 1, or one per category."""
        return len(self.categories) or 1


@dataclass(frozen=True, slots=True)
class TabularSchema:
    """Feature columns and a label column: classes, or a real value when ``regression``."""

    features: tuple[Feature, ...]
    label: str
    classes: tuple[Category, ...] = ()
    regression: bool = False

    @property
    def kind(self) -> str:
        """``"tabular"``."""
        return "tabular"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a source must hold: the features, then the label."""
        return (*(f.name for f in self.features), self.label)

    @property
    def numeric(self) -> tuple[str, ...]:
        """Names of the numeric features, in order (what a standardisation applies to)."""
        return tuple(f.name for f in self.features if not f.categorical)

    @property
    def input_dim(self) -> int:
        """Width of the encoded feature matrix."""
        return sum(f.width for f in self.features)

    @property
    def output_dim(self) -> int:
        """Model outputs: one per class, or one real value."""
        return 1 if self.regression else len(self.classes)


@dataclass(frozen=True, slots=True)
class ImageSchema:
    """Images of ``size`` (height, width) with ``channels``, each of one of ``classes``."""

    size: tuple[int, int]
    channels: int
    classes: tuple[str, ...]

    @property
    def kind(self) -> str:
        """``"image"``."""
        return "image"

    @property
    def output_dim(self) -> int:
        """One output per class."""
        return len(self.classes)


Schema = TabularSchema | ImageSchema


def schema_from_mapping(data: Mapping[str, Any], where: str = "task.args.schema") -> Schema:
    """The schema a config table describes; a ConfigError names the key that is wrong."""
    data = dict(data)
    kind = data.pop("kind", "tabular")
    try:
        if kind == "tabular":
            return _tabular(data, where)
        if kind == "image":
            return _image(data, where)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}.kind: {kind!r} is not one of 'tabular', 'image'")


def _no_extra(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown key {extra[0]!r}; allowed keys: {', '.join(sorted(allowed))}"
        )


def _tabular(data: Mapping[str, Any], where: str) -> TabularSchema:
    _no_extra(data, {"features", "label", "classes", "regression"}, where)
    if "label" not in data or not isinstance(data["label"], str):
        raise ConfigError(f"{where}.label: the label column's name is required")
    raw = data.get("features")
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise ConfigError(f"{where}.features: a non-empty list of feature columns is required")
    features = tuple(_feature(f, f"{where}.features[{i}]") for i, f in enumerate(raw))
    names = [f.name for f in features] + [data["label"]]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"{where}: column {dup!r} is named twice")
    regression = bool(data.get("regression", False))
    classes = tuple(data.get("classes", ()))
    if regression and classes:
        raise ConfigError(f"{where}: classes and regression = true exclude each other")
    if not regression and len(classes) < 2:
        raise ConfigError(f"{where}.classes: at least 2 classes (or set regression = true)")
    _distinct(classes, f"{where}.classes")
    return TabularSchema(features, data["label"], classes, regression)


def _feature(raw: Any, where: str) -> Feature:
    if isinstance(raw, str):
        return Feature(raw)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{where}: a column name, or a table with 'name'")
    _no_extra(raw, {"name", "categories", "impute"}, where)
    categories = tuple(raw.get("categories", ()))
    _distinct(categories, f"{where}.categories")
    impute = raw.get("impute")
    if impute is not None and categories and impute not in categories:
        raise ConfigError(f"{where}.impute: {impute!r} is not one of its categories")
    if impute is not None and not categories and not _finite_number(impute):
        raise ConfigError(f"{where}.impute: a numeric column needs a finite number, got {impute!r}")
    return Feature(raw["name"], categories, impute)


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _distinct(values: Sequence[Any], where: str) -> None:
    if len({str(v) for v in values}) != len(values):
        raise ConfigError(f"{where}: values must be distinct, got {list(values)}")


def _image(data: Mapping[str, Any], where: str) -> ImageSchema:
    _no_extra(data, {"size", "channels", "classes"}, where)
    size = data.get("size")
    if not (isinstance(size, Sequence) and len(size) == 2 and all(_positive_int(s) for s in size)):
        raise ConfigError(f"{where}.size: [height, width] in pixels is required, got {size!r}")
    channels = data.get("channels", 1)
    if channels not in (1, 3):
        raise ConfigError(f"{where}.channels: 1 (grey) or 3 (RGB), got {channels!r}")
    classes = tuple(str(c) for c in data.get("classes", ()))
    if len(classes) < 2:
        raise ConfigError(f"{where}.classes: at least 2 class folder names are required")
    _distinct(classes, f"{where}.classes")
    return ImageSchema((int(size[0]), int(size[1])), int(channels), classes)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
