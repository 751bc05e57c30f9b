"""``[stats] standardise``: the tabular task's scaling fitted from the federated statistics.

On the predictive-maintenance example's three plant files: the simulated fit equals the pooled
rows' mean and standard deviation; deployed sites (``site_client``, answering the statistics
instruction as a worker does, the coordinator's merge, ``stats.json`` and FIT config) get the
same mean and scale and train on exactly the rows the simulated clients train on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from murmura.analytics import wire
from murmura.analytics.federation import plan_from_config, release
from murmura.analytics.fit_scaling import deployed_scaling, fit_simulated
from murmura.analytics.grpc_round import STATS_KEY, site_answer
from murmura.analytics.report import write_stats
from murmura.analytics.standardise import STANDARDISE_KEY, scaling_from_json, scaling_to_json
from murmura.analytics.summary import merge_all
from murmura.compose.workload import federate
from murmura.config import Config, load_config
from murmura.errors import ConfigError, InstructionRejected
from murmura.node.instructions import STANDARDISE_KEY as WIRE_KEY
from murmura.node.instructions import InstructionLimits, check_config
from murmura.node.role_limits import check_role
from murmura.node.site import SiteConfig, site_client
from murmura.node.standardised_site import StandardisedSite
from murmura.sim.builder import build_experiment
from murmura.tasks import load_task
from murmura.types import FitIns

EXAMPLE = Path(__file__).parents[2] / "examples" / "predictive-maintenance"
PLANTS = ("plant-a", "plant-b", "plant-c")
NUMERIC = [3, 4, 5, 6, 7]  # encoded columns of the five sensors (after type's one-hot L/M/H)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    data = tmp_path_factory.mktemp("plants")
    spec = importlib.util.spec_from_file_location("make_data", EXAMPLE / "make_data.py")
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.write(data, 0)
    return load_config(EXAMPLE / "config.toml", [f'partition.path="{data}"', "run.rounds=1"])


def test_the_simulated_fit_is_the_pooled_mean_and_std_and_every_client_uses_it(
    cfg: Config,
) -> None:
    raw = federate(cfg, load_task(cfg.task.name, **cfg.task.args))[1]
    pooled = np.concatenate([raw.client_train(c)[0].numpy() for c in range(3)])
    pooled = pooled.astype(np.float64)[:, NUMERIC]
    fitted, stats = fit_simulated(cfg)
    assert stats.count == len(pooled) and not fitted.stats.standardise
    np.testing.assert_allclose(fitted.task.args["mean"], pooled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fitted.task.args["scale"], pooled.std(axis=0), rtol=1e-6)
    exp = build_experiment(cfg)
    assert exp.statistics is not None and exp.statistics.count == stats.count
    x = torch.cat([exp.data.client_train(c)[0] for c in range(3)]).double().numpy()[:, NUMERIC]
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)  # one scaling for all clients
    np.testing.assert_allclose(x.std(axis=0), 1.0, rtol=1e-5)


def _deployed_sites(cfg: Config, folder: Path) -> list[StandardisedSite]:
    """The three sites, their statistics merged as the coordinator does, ``stats.json``."""
    sites = []
    for plant in PLANTS:
        site = SiteConfig.model_validate({"data": {"path": str(_path(cfg) / f"{plant}.csv")}})
        client = site_client(site, cfg, plant)
        assert isinstance(client, StandardisedSite)
        sites.append(client)
    plan = plan_from_config(cfg, 2)
    ask = {STATS_KEY: plan.query.to_json()}
    answers = [wire.decode(np.array(site_answer(s, ask)[0]), plan.query) for s in sites]
    write_stats(folder, release(merge_all(answers), plan, len(answers)))
    return sites


def _path(cfg: Config) -> Path:
    return Path(str(cfg.partition.args("files")["path"]))


def test_deployed_sites_get_the_simulated_scaling_and_train_on_the_same_rows(
    cfg: Config, tmp_path: Path
) -> None:
    # no local hold-out: a site splits its rows as simulated client 0 does, whatever its
    # index in simulation, so with one the sites' training rows (and sums) would differ
    cfg = cfg.model_copy(
        update={"evaluation": cfg.evaluation.model_copy(update={"federated": False})}
    )
    sites = _deployed_sites(cfg, tmp_path)
    fit_config = deployed_scaling(cfg, tmp_path)
    sent = scaling_from_json(fit_config[STANDARDISE_KEY])
    fitted, _ = fit_simulated(cfg)
    assert sent == {"mean": fitted.task.args["mean"], "scale": fitted.task.args["scale"]}
    check_config({**fit_config, "epochs": 1}, InstructionLimits())  # a worker accepts it
    exp = build_experiment(cfg)
    weights = exp.model.get()
    for cid, site in enumerate(sites):
        res = site.fit(FitIns(1, weights, {**fit_config, "epochs": 1}))
        assert res.num_examples == exp.data.client_size(cid)
        got, want = site.learner.local_data(), exp.data.client_train(cid)  # type: ignore[union-attr]
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_site_refuses_to_train_or_evaluate_without_the_one_scaling(
    cfg: Config, tmp_path: Path
) -> None:
    site = _deployed_sites(cfg, tmp_path)[0]
    weights = build_experiment(cfg).model.get()
    assert site.learner is None
    with pytest.raises(InstructionRejected, match="after its first training round"):
        site.evaluate(weights)
    with pytest.raises(InstructionRejected, match="carries no 'standardise'"):
        site.fit(FitIns(1, weights, {"epochs": 1}))
    scaling = {"mean": [0.0] * 5, "scale": [1.0] * 5}
    with pytest.raises(InstructionRejected, match="4 values for 5 numeric"):
        short = {"mean": [0.0] * 4, "scale": [1.0] * 4}
        site.fit(FitIns(1, weights, {STANDARDISE_KEY: scaling_to_json(short)}))
    site.fit(FitIns(1, weights, {STANDARDISE_KEY: scaling_to_json(scaling), "epochs": 1}))
    assert site.evaluate(weights).num_examples > 0  # its held-out rows, scaled the same way
    other = {**scaling, "scale": [2.0] * 5}
    with pytest.raises(InstructionRejected, match="differs"):
        site.fit(FitIns(2, weights, {STANDARDISE_KEY: scaling_to_json(other)}))


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '{"mean": [0.0], "scale": [0.0]}',
        '{"mean": [NaN], "scale": [1.0]}',
        '{"mean": [0.0, 1.0], "scale": [1.0]}',
        '{"mean": [true], "scale": [1.0]}',
        '{"mean": [0.0], "scale": [1.0], "x": 1}',
        "not json",
        3.0,
    ],
)
def test_a_malformed_scaling_is_rejected_by_the_instruction_check(text: object) -> None:
    assert WIRE_KEY == STANDARDISE_KEY
    with pytest.raises(InstructionRejected, match=STANDARDISE_KEY):
        check_config({STANDARDISE_KEY: text}, InstructionLimits())  # type: ignore[dict-item]


def test_config_load_refuses_what_standardise_cannot_apply(cfg: Config, tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text((EXAMPLE / "config.toml").read_text())
    with pytest.raises(ConfigError, match="set stats.enabled = true too"):
        load_config(job, ["stats.enabled=false"])
    with pytest.raises(ConfigError, match="fits task.args.mean"):
        load_config(job, ["task.args.mean=[0.0, 0.0, 0.0, 0.0, 0.0]"])
    with pytest.raises(ConfigError, match="task.name is 'digits'"):
        load_config(job, ['task.name="digits"'])
    dirichlet = cfg.model_copy(
        update={"partition": cfg.partition.model_copy(update={"kind": "dirichlet"})}
    )
    for role in ("server", "client"):
        with pytest.raises(ConfigError, match="standardise = true is not applied"):
            check_role(role, dirichlet)  # type: ignore[arg-type]
    check_role("server", cfg)  # a files job: the sites apply it
