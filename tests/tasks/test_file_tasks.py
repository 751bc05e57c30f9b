"""The ``tabular`` and ``image`` tasks, ``[partition] kind = "files"``, and a site's client."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.site import (
    RefusedSite,
    SchemaRefused,
    coordinator_parts,
    load_site_config,
    site_client,
)
from murmura.sim.builder import build_experiment
from murmura.sim.choose import why_not_vectorized
from murmura.tasks import evaluate_classifier, load_task
from murmura.types import FitIns

SCHEMA: dict[str, Any] = {
    "label": "y",
    "classes": ["no", "yes"],
    "features": [{"name": "kind", "categories": ["a", "b"]}, "u", "v"],
}


def write_site(path: Path, n: int, seed: int, bad_row: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "u", "v", "y"])
        for i in range(n):
            u, v = rng.normal(size=2)
            kind = "a" if rng.random() < 0.5 else "b"
            w.writerow([kind, "oops" if i + 1 == bad_row else f"{u:.4f}", f"{v:.4f}",
                        "yes" if u + v > 0 else "no"])  # fmt: skip
    return path


@pytest.fixture
def sites(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i, n in enumerate((40, 25, 30)):
        write_site(data / f"site-{i}.csv", n, i)
    return data


def job(data: Path, **task_args: Any) -> dict[str, Any]:
    return {
        "run": {"seed": 3, "rounds": 2},
        "task": {"name": "tabular", "args": {"schema": SCHEMA, "hidden": [8], **task_args}},
        "partition": {"kind": "files", "path": str(data), "num_clients": 3},
        "client": {"batch_size": 8, "lr": 0.1},
        "evaluation": {"central": False, "federated": True, "local_fraction": 0.2},
    }


def test_files_partition_makes_one_client_per_file_in_name_order(sites: Path) -> None:
    task = load_task("tabular", schema=SCHEMA)
    data = task.federate(3, "files", {"path": str(sites)}, seed=0)
    assert [data.client_size(c) for c in range(3)] == [40, 25, 30]
    x, y = data.client_train(1)
    assert x.shape == (25, 4) and y.dtype == torch.int64
    assert set(x[:, :2].sum(dim=1).tolist()) == {1.0}  # one-hot of kind
    site = task.load(sites / "site-1.csv", "site-1")  # what a deployed site reads
    np.testing.assert_array_equal(site.x, x.numpy())
    np.testing.assert_array_equal(site.y, y.numpy())
    with pytest.raises(ConfigError, match=r"holds 3 client files or folders .* = 4"):
        task.federate(4, "files", {"path": str(sites)}, seed=0)


def test_a_simulated_files_job_trains_and_needs_a_test_set_for_central_evaluation(
    sites: Path,
) -> None:
    cfg = config_from_dict(job(sites))
    history = build_experiment(cfg).simulation.run(2)
    assert history.rounds[-1].federated_accuracy is not None
    central = job(sites)
    central["evaluation"] = {"central": True}
    with pytest.raises(ConfigError, match="evaluation.central = true but the task has no test"):
        build_experiment(config_from_dict(central))
    with pytest.raises(ConfigError, match="partition.path goes with partition.kind = 'files'"):
        config_from_dict({**job(sites), "partition": {"kind": "files"}})


def test_standardisation_is_an_argument_applied_to_numeric_columns_only(sites: Path) -> None:
    plain = load_task("tabular", schema=SCHEMA).load(sites / "site-0.csv", "s")
    scaled = load_task("tabular", schema=SCHEMA, mean=[1.0, -1.0], scale=[2.0, 4.0])
    local = scaled.load(sites / "site-0.csv", "s")
    np.testing.assert_array_equal(local.x[:, :2], plain.x[:, :2])
    np.testing.assert_allclose(local.x[:, 2], (plain.x[:, 2] - 1.0) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(local.x[:, 3], (plain.x[:, 3] + 1.0) / 4.0, rtol=1e-6)
    with pytest.raises(ConfigError, match=r"one value per numeric feature \(2: u, v\)"):
        load_task("tabular", schema=SCHEMA, mean=[0.0], scale=[1.0])


def test_regression_trains_on_real_targets_and_reports_only_the_loss(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("u,v,t\n" + "".join(f"{i},{-i},{0.5 * i}\n" for i in range(10)))
    schema = {"label": "t", "regression": True, "features": ["u", "v"]}
    task = load_task("tabular", schema=schema, model="linear", data=str(path))
    data = task.federate(2, "iid", {}, seed=0)
    x, y = data.client_train(0)
    assert y.dtype == torch.float32 and task.build_model()(x).shape == (len(x), 1)
    res = evaluate_classifier(task.build_model(), task, x, y)
    assert res.metrics == {} and res.loss > 0
    with pytest.raises(ConfigError, match="task.args.data"):
        load_task("tabular", schema=schema).federate(2, "iid", {}, seed=0)


def test_the_image_task_trains_vectorised(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for site in ("s0", "s1"):
        for cls in ("0", "1"):
            (tmp_path / site / cls).mkdir(parents=True)
            for i in range(3):
                img = rng.integers(0, 255, (8, 8), dtype=np.uint8)
                Image.fromarray(img, mode="L").save(tmp_path / site / cls / f"{i}.png")
    cfg = config_from_dict(
        {
            "task": {
                "name": "image",
                "args": {
                    "schema": {"kind": "image", "size": [8, 8], "classes": ["0", "1"]},
                    "width": 8,
                },
            },
            "partition": {"kind": "files", "path": str(tmp_path), "num_clients": 2},
            "evaluation": {"central": False},
        }
    )
    exp = build_experiment(cfg)
    assert exp.data.client_size(0) == 6
    clients = list(exp.simulation.clients.values())  # type: ignore[union-attr]
    assert why_not_vectorized(exp.model, exp.task, clients) is None


def site_file(tmp_path: Path, data: Path, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[data]\npath = "{data.name}"\n{extra}')
    return path


def test_a_site_trains_on_its_own_file_from_the_jobs_initial_model(
    tmp_path: Path, sites: Path
) -> None:
    cfg = config_from_dict(job(sites))
    mine = tmp_path / "mine.csv"
    write_site(mine, 50, 9)
    site = load_site_config(site_file(tmp_path, mine))
    assert site.data.path == str(tmp_path / "mine.csv")  # relative to the site config
    client = site_client(site, cfg, "plant-x")
    assert client.num_examples == 40  # type: ignore[attr-defined]  # 20% held out
    _, weights, layout = coordinator_parts(cfg)
    np.testing.assert_array_equal(weights, build_experiment(cfg).simulation.weights)  # type: ignore[union-attr]
    res = client.fit(FitIns(1, weights, {}))
    assert res.num_examples == 40 and res.update.shape == (layout.size,)
    with pytest.raises(ConfigError, match=r"\[evaluation\] central = true"):
        coordinator_parts(config_from_dict({**job(sites), "evaluation": {"central": True}}))


def test_a_site_with_a_bad_file_is_refused_with_names_but_no_values(
    tmp_path: Path, sites: Path
) -> None:
    bad = write_site(tmp_path / "bad.csv", 20, 1, bad_row=7)
    client = site_client(
        load_site_config(site_file(tmp_path, bad)), config_from_dict(job(sites)), "n"
    )
    assert isinstance(client, RefusedSite)
    assert client.reason == "site n: bad.csv: column 'u', row 7: a value is not a number"
    with pytest.raises(SchemaRefused, match="column 'u', row 7"):
        client.fit(FitIns(1, np.zeros(3, np.float32), {}))


def test_a_site_may_bring_its_own_client_or_task(
    tmp_path: Path, sites: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ops_code.py").write_text(
        "class Mine:\n"
        "    def __init__(self, local):\n"
        "        self.node_id, self.rows = local.site, len(local)\n"
        "def client(local):\n"
        "    return Mine(local)\n"
    )
    monkeypatch.chdir(tmp_path)
    mine = write_site(tmp_path / "mine.csv", 12, 4)
    cfg = config_from_dict(job(sites))
    site = load_site_config(site_file(tmp_path, mine, '[site]\nclient = "ops_code:client"\n'))
    client: Any = site_client(site, cfg, "plant-y")
    assert (client.node_id, client.rows) == ("plant-y", 12)
    with pytest.raises(ConfigError, match="names a task and a client factory"):
        load_site_config(site_file(tmp_path, mine, '[site]\nclient = "a:b"\ntask = "c:d"\n'))


def test_a_sites_local_dp_noises_its_update_and_an_own_client_is_refused(
    tmp_path: Path, sites: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = write_site(tmp_path / "mine.csv", 50, 9)
    site = load_site_config(site_file(tmp_path, mine))
    no_eval = {"central": False, "federated": False}
    plain_cfg = config_from_dict({**job(sites), "evaluation": no_eval})
    private = {"mode": "local", "clip_norm": 0.05, "noise_multiplier": 1.0, "delta": 1e-5}
    dp_cfg = config_from_dict({**job(sites), "privacy": private, "evaluation": no_eval})
    _, weights, _ = coordinator_parts(plain_cfg)
    plain = site_client(site, plain_cfg, "plant-x").fit(FitIns(1, weights, {}))
    noised = site_client(site, dp_cfg, "plant-x").fit(FitIns(1, weights, {}))
    # clipped to 0.05, then noise of std 0.05 per coordinate: far from the plain update
    assert np.linalg.norm(plain.update) > 0
    assert np.linalg.norm(noised.update - plain.update) > 0.05
    (tmp_path / "ops_code2.py").write_text("def client(local):\n    return local\n")
    monkeypatch.chdir(tmp_path)
    own = load_site_config(site_file(tmp_path, mine, '[site]\nclient = "ops_code2:client"\n'))
    with pytest.raises(ConfigError, match=r"\[privacy\] local DP and DP-SGD"):
        site_client(own, dp_cfg, "plant-y")
