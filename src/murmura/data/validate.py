"""Checking a site's data against the job's schema, and encoding it as arrays.

``encode_chunk`` is a pure function of a schema and a chunk of columns: it returns the
feature matrix (numeric features as float32, categorical ones one-hot from the declared
categories) and the targets (class index, or float32 for regression), or raises a
``SchemaError`` naming the site, the file, the column and the row (1-based, header excluded)
of the first problem: a missing column, a wrong type, an unknown category or label, a missing
value without an imputation rule, an empty file. ``read_local`` runs it over a site's sources
and concatenates, allocating the matrix once when the sources know their size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.data.schema import Category, Feature, ImageSchema, Schema, TabularSchema
from murmura.data.sources import IMAGE, LABEL, Chunk, DataSource
from murmura.errors import SchemaError

Encoded = tuple[NDArray[np.float32], NDArray[Any]]
Fail = Callable[..., SchemaError]  # (row index in the chunk, problem, value=None) -> the error
_NO_IMPUTE = "value is missing and the schema gives no impute rule for this column"


@dataclass(frozen=True, slots=True)
class LocalData:
    """A site's data, checked and encoded: inputs, targets and the files they came from."""

    x: NDArray[np.float32]
    y: NDArray[Any]
    site: str
    files: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.x)


def read_local(schema: Schema, sources: Sequence[DataSource], site: str) -> LocalData:
    """Every row of ``sources``, checked and encoded; a ``SchemaError`` at the first problem."""
    columns = schema.columns if isinstance(schema, TabularSchema) else (IMAGE, LABEL)
    sizes = [s.num_rows() for s in sources]
    known = all(n is not None for n in sizes) and isinstance(schema, TabularSchema)
    total = sum(n or 0 for n in sizes)
    xs: list[NDArray[np.float32]] = []
    ys: list[NDArray[Any]] = []
    dim = schema.input_dim if isinstance(schema, TabularSchema) else 0
    x_all = np.empty((total, dim), np.float32) if known else None
    y_all = np.empty(total, _target_dtype(schema)) if known else None
    filled, files = 0, []
    for source in sources:
        rows = 0
        for chunk in source.chunks(columns):
            if x_all is not None and y_all is not None and isinstance(schema, TabularSchema):
                x, y = encode_tabular(schema, chunk, site, x_all[filled:])
                y_all[filled : filled + len(x)] = y
            else:
                x, y = encode_chunk(schema, chunk, site)
                xs.append(x)
                ys.append(y)
            filled, rows = filled + len(x), rows + len(x)
        if rows == 0:
            raise SchemaError(site, source.name, None, None, "holds no rows")
        files.append(source.name)
    if x_all is not None and y_all is not None:
        return LocalData(x_all[:filled], y_all[:filled], site, tuple(files))
    if not xs:
        raise SchemaError(site, "-", None, None, "no data sources")
    return LocalData(np.concatenate(xs), np.concatenate(ys), site, tuple(files))


def _target_dtype(schema: Schema) -> type[np.generic]:
    return np.float32 if isinstance(schema, TabularSchema) and schema.regression else np.int64


def encode_chunk(schema: Schema, chunk: Chunk, site: str) -> Encoded:
    """The chunk's rows as (inputs, targets), checked against ``schema``."""
    if isinstance(schema, ImageSchema):
        return _encode_images(schema, chunk, site)
    return encode_tabular(schema, chunk, site)


def encode_tabular(
    schema: TabularSchema, chunk: Chunk, site: str, out: NDArray[np.float32] | None = None
) -> Encoded:
    """Feature matrix and targets of a chunk of tabular rows.

    ``out``: a matrix of at least the chunk's rows to write the features into (its first rows
    are returned), so a reader that allocated the whole site's matrix copies nothing.
    """

    def fail(column: str, index: int | None, problem: str, value: Any = None) -> SchemaError:
        row = None if index is None else chunk.first_row + index
        return SchemaError(site, chunk.file, column, row, problem, value)

    def at_column(column: str) -> Fail:
        return lambda i, p, v=None: fail(column, i, p, v)

    for name in schema.columns:
        if name not in chunk.columns:
            have = ", ".join(sorted(chunk.columns)) or "none"
            raise fail(name, None, f"is missing (of the schema's columns it has: {have})")
    n = chunk.num_rows if chunk.num_rows is not None else len(chunk.columns[schema.label])
    x = np.empty((n, schema.input_dim), np.float32) if out is None else out[:n]
    at = 0
    for f in schema.features:
        values = chunk.columns[f.name]
        if f.categorical:
            codes = _codes(values, f.categories, f.impute, at_column(f.name))
            x[:, at : at + f.width] = 0.0
            x[np.arange(n), at + codes] = 1.0
        else:
            x[:, at] = _numbers(values, f, at_column(f.name))
        at += f.width
    labels = chunk.columns[schema.label]
    if schema.regression:
        y = _numbers(labels, Feature(schema.label), at_column(schema.label))
        return x, y.astype(np.float32)
    return x, _codes(labels, schema.classes, None, at_column(schema.label))


def _numbers(values: NDArray[Any], f: Feature, fail: Fail) -> NDArray[np.floating[Any]]:
    """A numeric column as floats (float32 stays float32); a missing value is imputed or refused."""
    if values.dtype.kind in "iub":
        return values.astype(np.float64)
    out: NDArray[np.floating[Any]]
    if values.dtype.kind == "f":
        out = values  # copied only to impute: never write into the caller's array
    else:
        out = np.empty(len(values), np.float64)
        for i, v in enumerate(values):
            out[i] = _number(v, i, fail)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        if not np.isnan(out[i]):
            raise fail(i, "is not a finite number", out[i])
        if f.impute is None:
            raise fail(i, _NO_IMPUTE)
        out = np.where(np.isnan(out), out.dtype.type(f.impute), out)
        if not np.isfinite(out).all():
            i = int(np.argmax(~np.isfinite(out)))
            raise fail(i, "is not a finite number", out[i])
    return out


def _number(v: Any, i: int, fail: Fail) -> float:
    """One text cell as a number; None (an empty cell) is NaN."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise fail(i, "is not a number", v) from None


def _key(v: Any) -> str:
    """A category value as text, so 1, 1.0 and "1" are the same category."""
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    return str(v)


_MISSING = "\0missing"  # the key of an empty cell among text keys


def _keys(values: NDArray[Any]) -> NDArray[Any]:
    """Values ``np.unique`` can sort: numbers as they are (NaN: missing), text as keys."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iufb":
        return arr
    return np.array([_MISSING if _is_missing(v) else _key(v) for v in arr], dtype=object)


def _is_missing(v: Any) -> bool:
    return v is None or v == _MISSING or (isinstance(v, float | np.floating) and math.isnan(v))


def _codes(
    values: NDArray[Any], categories: Sequence[Category], impute: Category | None, fail: Fail
) -> NDArray[np.int64]:
    """Each value's index in ``categories``; unknown values refused, missing ones imputed."""
    arr = np.asarray(values)
    numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in categories)
    if numeric and arr.dtype.kind in "iuf":
        return _number_codes(arr, categories, impute, fail)
    index = {_key(c): k for k, c in enumerate(categories)}
    keys = _keys(arr)
    uniq = np.unique(keys)  # few values: look each row up, not a full argsort (memory)
    inverse = np.searchsorted(uniq, keys) if len(uniq) > 1 else np.zeros(len(keys), np.int64)
    codes = np.empty(len(uniq), np.int64)
    for k, u in enumerate(uniq):
        if _is_missing(u):
            if impute is None:
                raise fail(int(np.argmax(inverse == k)), _NO_IMPUTE)
            codes[k] = index[_key(impute)]
        elif _key(u) in index:
            codes[k] = index[_key(u)]
        else:
            raise fail(int(np.argmax(inverse == k)), f"is not one of {_known(categories)}", u)
    return codes[inverse.reshape(-1)]


def _number_codes(
    arr: NDArray[Any], categories: Sequence[Category], impute: Category | None, fail: Fail
) -> NDArray[np.int64]:
    """``_codes`` of a numeric column with numeric categories: one comparison per category."""
    codes = np.full(len(arr), -1, np.int64)
    for k, c in enumerate(categories):
        codes[arr == c] = k
    if arr.dtype.kind == "f":
        missing = np.isnan(arr)
        if missing.any():
            if impute is None:
                raise fail(int(np.argmax(missing)), _NO_IMPUTE)
            codes[missing] = list(categories).index(impute)
    unknown = codes < 0
    if unknown.any():
        i = int(np.argmax(unknown))
        raise fail(i, f"is not one of {_known(categories)}", _key(arr[i]))
    return codes


def _known(categories: Sequence[Category]) -> str:
    return ", ".join(_key(c) for c in categories)


def _encode_images(schema: ImageSchema, chunk: Chunk, site: str) -> Encoded:
    """Images as float32 (n, channels, height, width) in [0, 1], labels as class indices."""
    for name in (IMAGE, LABEL):
        if name not in chunk.columns:
            raise SchemaError(site, chunk.file, name, None, "array is missing")
    images = np.asarray(chunk.columns[IMAGE])
    c, (h, w) = schema.channels, schema.size
    shape = images.shape[1:]
    if shape not in ((h, w), (h, w, c), (c, h, w)) or (c == 3 and shape == (h, w)):
        row = chunk.first_row if len(images) == 1 else None
        raise SchemaError(
            site, chunk.file, IMAGE, row, f"image is {shape}, the schema says {c} x {h} x {w}"
        )
    x = images.astype(np.float32)
    if images.dtype.kind in "ui":
        x /= 255.0
    if shape == (h, w):
        x = x[:, None]
    elif shape == (h, w, c):
        x = np.moveaxis(x, -1, 1)

    def fail(i: int, problem: str, value: Any = None) -> SchemaError:
        return SchemaError(site, chunk.file, LABEL, chunk.first_row + i, problem, value)

    return np.ascontiguousarray(x), _codes(chunk.columns[LABEL], schema.classes, None, fail)
