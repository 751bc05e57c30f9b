"""Local data sources: a site's own files, read in chunks behind one small protocol.

A ``DataSource`` yields ``Chunk``s: columns of rows from one file, with the file's name and
the number of its first row, so validation (``murmura.data.validate``) can name the file and
row of a bad value. Built in: CSV and Parquet (``pyarrow``, streamed in record batches so a
large file never sits in memory twice), NumPy ``.npz`` (one array per column), an image
folder (one sub-folder per class, PNG/JPEG via Pillow) and the site operator's own loader,
named ``"package.module:function"``: local code configured at the site, never sent by anyone.
It is called as ``function(path, **args)`` and returns columns (a mapping of name to 1-D
array), or an iterable of such mappings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError
from murmura.registry import resolve_user

Columns = Mapping[str, NDArray[Any]]
TABULAR_SUFFIXES = (".csv", ".parquet", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE, LABEL = "image", "label"  # the columns an image source yields


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows of one file: ``columns`` by name; the first is row ``first_row`` (header excluded)."""

    columns: Columns
    file: str
    first_row: int = 1
    num_rows: int | None = None
    """How many rows, when known without reading a column (else: the label column's length)."""


class DataSource(Protocol):
    """Rows of a site's local data, read in chunks."""

    @property
    def name(self) -> str:
        """The file or folder, as errors name it."""
        ...

    def num_rows(self) -> int | None:
        """How many rows it holds, when known without reading them (lets a reader allocate once)."""
        ...

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """The rows, in order, with at least ``columns`` (a missing one is simply absent)."""
        ...


class _FileSource:
    """What every built-in source shares: the path it reads, named as errors name it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        """The file or folder."""
        return str(self.path)

    def num_rows(self) -> int | None:
        """Unknown until read (a source that knows it from metadata says so)."""
        return None


class CsvSource(_FileSource):
    """A CSV file with a header row, streamed by pyarrow in blocks."""

    def __init__(self, path: Path | str, delimiter: str = ",") -> None:
        super().__init__(path)
        self.delimiter = delimiter

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """Record batches of the named columns; strings when pyarrow cannot type a column."""
        import pyarrow as pa

        try:
            yield from self._read(columns, as_text=False)
        except pa.ArrowInvalid:
            # a value pyarrow cannot convert: read as text, so validation names its row
            yield from self._read(columns, as_text=True)

    def _read(self, columns: Sequence[str], as_text: bool) -> Iterator[Chunk]:
        import pyarrow as pa
        from pyarrow import csv

        parse = csv.ParseOptions(delimiter=self.delimiter)
        with open(self.path, "rb") as f:
            header = csv.open_csv(f, parse_options=parse).schema.names
        wanted = [c for c in columns if c in header]
        types = {c: pa.string() for c in wanted} if as_text else None
        convert = csv.ConvertOptions(
            include_columns=wanted, column_types=types, strings_can_be_null=True
        )
        reader = csv.open_csv(self.path, parse_options=parse, convert_options=convert)
        row = 1
        for batch in reader:
            yield Chunk(_batch_columns(batch), self.name, row)
            row += batch.num_rows


class ParquetSource(_FileSource):
    """A Parquet file, read in record batches of the named columns."""

    def num_rows(self) -> int | None:
        """From the file's footer."""
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(self.path).metadata.num_rows)

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """One chunk per row group, whose columns are read one at a time, when used."""
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        wanted = [c for c in columns if c in f.schema_arrow.names]
        row = 1
        for group in range(f.num_row_groups):
            n = f.metadata.row_group(group).num_rows
            yield Chunk(_RowGroupColumns(f, group, wanted), self.name, row, n)
            row += n


class _RowGroupColumns(Mapping[str, NDArray[Any]]):
    """The columns of one Parquet row group, each read when asked for and not kept.

    Encoding uses a column once, so only one decoded column is alive at a time, never the
    whole row group (often the whole file).
    """

    def __init__(self, file: Any, group: int, names: Sequence[str]) -> None:
        self.file, self.group, self.names = file, group, list(names)

    def __getitem__(self, name: str) -> NDArray[Any]:
        if name not in self.names:
            raise KeyError(name)
        return _numpy(self.file.read_row_group(self.group, columns=[name]).column(0))

    def __contains__(self, name: object) -> bool:
        return name in self.names  # without reading the column

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _batch_columns(batch: Any) -> dict[str, NDArray[Any]]:
    """A pyarrow record batch as NumPy columns (nulls: NaN in numbers, None in text)."""
    return {name: _numpy(batch.column(i)) for i, name in enumerate(batch.schema.names)}


def _numpy(column: Any) -> NDArray[Any]:
    """A pyarrow array as NumPy: numbers without nulls as a view of its buffer, else converted.

    The view also spares importing pandas, which pyarrow's own conversion does (~50 MB).
    """
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if arr.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        kind = "f" if pa.types.is_floating(t) else ("i" if pa.types.is_signed_integer(t) else "u")
        dtype = np.dtype(f"<{kind}{t.bit_width // 8}")
        offset = arr.offset * dtype.itemsize
        return np.frombuffer(arr.buffers()[1], dtype, len(arr), offset)
    return np.asarray(arr.to_numpy(zero_copy_only=False))


class NpzSource(_FileSource):
    """A NumPy ``.npz`` file: one array per column (images: ``image`` and ``label``)."""

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """One chunk of every named array in the file (no pickled objects are loaded)."""
        with np.load(self.path, allow_pickle=False) as z:
            yield Chunk({c: z[c] for c in columns if c in z.files}, self.name)


class ImageFolderSource(_FileSource):
    """A folder with one sub-folder per class of PNG/JPEG images; one chunk per image."""

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """Each image as an ``image`` array (H, W) or (H, W, 3), with its folder as ``label``."""
        from PIL import Image

        for folder in sorted(p for p in self.path.iterdir() if p.is_dir()):
            for file in sorted(folder.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with Image.open(file) as img:
                    mode = img.mode if img.mode in ("L", "RGB") else _plain_mode(img.mode)
                    pixels = np.asarray(img.convert(mode))
                cols = {IMAGE: pixels[None], LABEL: np.array([folder.name], dtype=object)}
                yield Chunk(cols, str(file))


def _plain_mode(mode: str) -> str:
    """Grey or RGB for any other Pillow mode (palette, alpha, 16-bit grey)."""
    return "RGB" if mode in ("P", "RGBA", "CMYK", "YCbCr", "LAB", "HSV") else "L"


class LoaderSource(_FileSource):
    """The site operator's own loader ``"package.module:function"``, called with the path."""

    def __init__(
        self, target: str, path: Path | str, args: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(path)
        self.target, self.args = target, dict(args or {})

    def chunks(self, columns: Sequence[str]) -> Iterator[Chunk]:
        """What the loader returns: one mapping of columns, or several."""
        try:
            fn = resolve_user(self.target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"data loader {self.target!r} cannot be loaded: {exc}") from None
        out = fn(self.name, **self.args)
        parts: Iterable[Columns] = [out] if isinstance(out, Mapping) else out
        row = 1
        for cols in parts:
            arrays = {c: np.asarray(cols[c]) for c in columns if c in cols}
            yield Chunk(arrays, self.name, row)
            row += len(next(iter(arrays.values()))) if arrays else 0


def file_source(path: Path) -> DataSource:
    """The built-in source for a file, by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvSource(path)
    if suffix == ".parquet":
        return ParquetSource(path)
    if suffix == ".npz":
        return NpzSource(path)
    raise ConfigError(f"{path}: unknown data file type {suffix!r}; use .csv, .parquet or .npz")


def open_sources(
    path: Path | str, kind: str, loader: str | None = None, args: Mapping[str, Any] | None = None
) -> list[DataSource]:
    """The sources of one site's data at ``path`` (a file or a folder) for a ``kind`` schema.

    ``loader``: the operator's own ``"package.module:function"``. Otherwise a tabular site is
    a file, or a folder of files (read in name order); an image site is an image folder or an
    ``.npz`` file.
    """
    p = Path(path)
    if loader is not None:
        return [LoaderSource(loader, p, args)]
    if not p.exists():
        raise ConfigError(f"data path {p} does not exist")
    if args:
        raise ConfigError(f"data path {p}: loader arguments {sorted(args)} need a loader")
    if p.is_file():
        return [file_source(p)]
    if kind == "image":
        return [ImageFolderSource(p)]
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in TABULAR_SUFFIXES)
    if not files:
        raise ConfigError(f"data folder {p} holds no .csv, .parquet or .npz file")
    return [file_source(f) for f in files]


def site_entries(path: Path | str, kind: str) -> list[Path]:
    """The clients of a ``[partition] kind = "files"`` folder: each data file or sub-folder.

    Tabular: every .csv/.parquet/.npz file and every sub-folder; images: every sub-folder
    (an image folder of its own) and .npz file. Sorted by name, so client i is the same on
    every run.
    """
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"partition.path {p} is not a folder (one file or folder per client)")
    suffixes = (".npz",) if kind == "image" else TABULAR_SUFFIXES
    return sorted(e for e in p.iterdir() if e.is_dir() or e.suffix.lower() in suffixes)
