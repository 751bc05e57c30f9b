"""Local data sources, the schema and its validation: each format reads the same, bad data names
the site, file, column and row."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from murmura.data.schema import ImageSchema, TabularSchema, schema_from_mapping
from murmura.data.sources import Chunk, file_source, open_sources
from murmura.data.validate import encode_tabular, read_local
from murmura.errors import ConfigError, SchemaError

SCHEMA: dict[str, Any] = {
    "label": "failure",
    "classes": [0, 1],
    "features": [
        {"name": "type", "categories": ["L", "M", "H"]},
        "temp",
        {"name": "torque", "impute": 40.0},
    ],
}
ROWS = [
    {"type": "L", "temp": 300.5, "torque": 41.0, "failure": 0},
    {"type": "H", "temp": 301.0, "torque": 55.5, "failure": 1},
    {"type": "M", "temp": 299.0, "torque": 38.0, "failure": 0},
]
# type one-hot (L, M, H), temp, torque
EXPECTED_X = np.array(
    [[1, 0, 0, 300.5, 41.0], [0, 0, 1, 301.0, 55.5], [0, 1, 0, 299.0, 38.0]], np.float32
)


def write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def load(path: Path, schema: dict[str, Any] = SCHEMA, site: str = "s1", **kw: Any) -> Any:
    s = schema_from_mapping(schema)
    return read_local(s, open_sources(path, s.kind, **kw), site)


def test_the_schema_is_a_frozen_dataclass_built_from_the_config() -> None:
    s = schema_from_mapping(SCHEMA)
    assert isinstance(s, TabularSchema)
    assert s.columns == ("type", "temp", "torque", "failure")
    assert (s.input_dim, s.output_dim, s.numeric) == (5, 2, ("temp", "torque"))
    img = schema_from_mapping({"kind": "image", "size": [8, 8], "classes": ["a", "b"]})
    assert isinstance(img, ImageSchema) and img.channels == 1 and img.output_dim == 2
    with pytest.raises(AttributeError):
        s.label = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"label": None}, "task.args.schema.label"),
        ({"classes": [0]}, "at least 2 classes"),
        ({"regression": True}, "classes and regression = true exclude each other"),
        ({"features": []}, "task.args.schema.features"),
        ({"features": ["a", "a"]}, "column 'a' is named twice"),
        ({"features": [{"name": "a", "categories": ["x"], "impute": "y"}]}, "not one of its"),
        ({"features": [{"name": "a", "impute": "zero"}]}, "finite number"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"kind": "audio"}, "'audio' is not one of"),
    ],
)
def test_a_bad_schema_is_refused_naming_the_key(change: dict[str, Any], says: str) -> None:
    data = {**SCHEMA, **change}
    with pytest.raises(ConfigError, match=says):
        schema_from_mapping({k: v for k, v in data.items() if v is not None})


def test_csv_parquet_npz_and_an_own_loader_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = columns(ROWS)
    write_csv(tmp_path / "a.csv", ROWS)
    pq.write_table(pa.table(cols), tmp_path / "a.parquet")
    np.savez(
        tmp_path / "a.npz", **{k: v.astype(str) if k == "type" else v for k, v in cols.items()}
    )
    # the operator's loader, in a module of the current directory (no PYTHONPATH)
    (tmp_path / "mysite_io.py").write_text(
        "import numpy as np\n"
        "def load(path, scale=1.0):\n"
        "    z = np.load(path)\n"
        "    return {k: z[k] for k in z.files}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    for local in (
        load(tmp_path / "a.csv"),
        load(tmp_path / "a.parquet"),
        load(tmp_path / "a.npz"),
        load(tmp_path / "a.npz", loader="mysite_io:load", args={"scale": 2.0}),
    ):
        np.testing.assert_array_equal(local.x, EXPECTED_X)
        np.testing.assert_array_equal(local.y, [0, 1, 0])


def test_a_folder_of_files_is_one_site_read_in_name_order(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_csv(site / "2.csv", ROWS[2:])
    write_csv(site / "1.csv", ROWS[:2])
    local = load(site)
    np.testing.assert_array_equal(local.x, EXPECTED_X)
    assert [Path(f).name for f in local.files] == ["1.csv", "2.csv"]


def test_an_image_folder_reads_each_class_folder(tmp_path: Path) -> None:
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((4, 6), value, np.uint8), mode="L").save(
                tmp_path / cls / f"{i}.png"
            )
    schema = {"kind": "image", "size": [4, 6], "channels": 1, "classes": ["cat", "dog"]}
    local = load(tmp_path, schema)
    assert local.x.shape == (4, 1, 4, 6)
    np.testing.assert_array_equal(local.y, [0, 0, 1, 1])
    assert local.x[:2].max() == 0.0 and local.x[2:].min() == 1.0
    with pytest.raises(SchemaError, match=r"cat/0.png: column 'image', row 1: image is \(4, 6\)"):
        load(tmp_path, {**schema, "size": [8, 8]})


def test_an_npz_of_images_reads_like_a_folder(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)  # (n, H, W, RGB)
    np.savez(tmp_path / "im.npz", image=images, label=np.array(["b", "a"]))
    schema = {"kind": "image", "size": [3, 4], "channels": 3, "classes": ["a", "b"]}
    local = load(tmp_path / "im.npz", schema)
    assert local.x.shape == (2, 3, 3, 4)  # channels first
    np.testing.assert_allclose(local.x[1, 2], images[1, :, :, 2] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(local.y, [1, 0])


def _bad(tmp_path: Path, rows: list[dict[str, Any]], **kw: Any) -> SchemaError:
    path = write_csv(tmp_path / "plant.csv", rows, **kw)
    with pytest.raises(SchemaError) as info:
        load(path, site="plant-a")
    return info.value


def test_a_missing_column_names_site_file_and_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "temp"} for r in ROWS]
    err = _bad(tmp_path, rows)
    assert str(err).startswith(f"site plant-a: {tmp_path / 'plant.csv'}: column 'temp': is missing")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("temp", "hot", "column 'temp', row 2: 'hot' is not a number"),
        ("type", "XL", "column 'type', row 2: 'XL' is not one of L, M, H"),
        ("failure", 7, "column 'failure', row 2: '7' is not one of 0, 1"),
        ("temp", "", "column 'temp', row 2: value is missing and the schema gives no impute"),
        ("type", "", "column 'type', row 2: value is missing and the schema gives no impute"),
    ],
)
def test_a_bad_value_names_its_column_and_row(
    tmp_path: Path, column: str, value: Any, message: str
) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1][column] = value
    err = _bad(tmp_path, rows)
    assert message in str(err)
    assert err.row == 2 and err.column == column and err.site == "plant-a"
    public = err.public()  # what leaves the site: names and counts, never the value
    assert str(tmp_path) not in public and "plant.csv" in public
    if value not in ("", 7):
        assert str(value) not in public and "a value" in public


def test_a_missing_value_is_imputed_when_the_schema_says_how(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["torque"] = ""
    local = load(write_csv(tmp_path / "a.csv", rows))
    assert local.x[2, 4] == 40.0 and local.x[1, 4] == 55.5


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    err = _bad(tmp_path, [], header=list(ROWS[0]))
    assert str(err) == f"site plant-a: {tmp_path / 'plant.csv'}: holds no rows"


def test_an_unknown_file_type_and_a_missing_path_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data file type '.xlsx'"):
        file_source(tmp_path / "a.xlsx")
    with pytest.raises(ConfigError, match="does not exist"):
        open_sources(tmp_path / "nope", "tabular")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["L", "M", "H"]),
            st.floats(-1e6, 1e6, allow_nan=False, width=32),
            st.one_of(st.just(math.nan), st.floats(-1e3, 1e3, width=32)),
            st.integers(0, 1),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 1000),
)
def test_encoding_is_one_hot_plus_values_with_imputation(rows: list[Any], first: int) -> None:
    kinds, temps, torques, labels = (np.array(c, dtype=object) for c in zip(*rows, strict=True))
    cols = {"type": kinds, "temp": temps.astype(np.float32), "torque": torques.astype(np.float64)}
    chunk = Chunk({**cols, "failure": labels.astype(np.int64)}, "f.npz", first)
    x, y = encode_tabular(schema_from_mapping(SCHEMA), chunk, "s")
    idx = {"L": 0, "M": 1, "H": 2}
    for i, (k, t, q, lab) in enumerate(rows):
        onehot = [0.0, 0.0, 0.0]
        onehot[idx[k]] = 1.0
        want = [*onehot, np.float32(t), 40.0 if math.isnan(q) else np.float32(q)]
        np.testing.assert_array_equal(x[i], np.array(want, np.float32))
        assert y[i] == lab
