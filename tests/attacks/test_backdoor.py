"""Backdoors: the trigger, poisoning, the boosts, and the attack success rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from murmura.attacks import AttackContext, RoundView, make_attack
from murmura.attacks.backdoor import PATTERN, Trigger, attack_success_rate
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.types import FitRes

CTX = AttackContext(num_clients=50, cohort_size=10, server_lr=0.5, seed=0, num_classes=10)


def test_the_trigger_sets_its_pixels_on_8x8_images_and_dba_splits_it() -> None:
    x = torch.zeros(3, 64)
    stamped = Trigger().stamp(x)
    hot = {r * 8 + c for r, c in PATTERN}
    assert set(torch.nonzero(stamped[0]).flatten().tolist()) == hot
    assert float(stamped[:, sorted(hot)].min()) == 5.0 and float(x.abs().sum()) == 0.0
    pieces = [Trigger().piece(i, 4).pixels for i in range(4)]
    assert sorted(p for piece in pieces for p in piece) == sorted(PATTERN)
    assert all(len(p) == 2 for p in pieces) and Trigger().piece(5, 4).pixels == pieces[1]
    with pytest.raises(ConfigError, match="square images"):
        Trigger().stamp(torch.zeros(2, 10))


def test_backdoor_poisons_the_seeded_fraction_with_the_target() -> None:
    attack = make_attack("backdoor", CTX, {"target": 3, "fraction": 0.25})
    x, y = torch.zeros(40, 64), torch.arange(40) % 10
    px, py = attack.poison(x, y)  # type: ignore[attr-defined]
    changed = torch.nonzero((px != x).any(dim=1)).flatten()
    assert len(changed) == 10 and bool((py[changed] == 3).all())
    keep = torch.ones(40, dtype=torch.bool)
    keep[changed] = False
    assert torch.equal(py[keep], y[keep])
    again = attack.poison(x, y)  # type: ignore[attr-defined]
    assert torch.equal(again[0], px)  # seeded
    with pytest.raises(ConfigError, match="target"):
        make_attack("backdoor", CTX, {"target": 10})


def test_model_replacement_boosts_by_n_over_eta_shared_by_the_attackers() -> None:
    from dataclasses import replace

    attack = make_attack("model_replacement", CTX, {})
    res = attack.corrupt(1, "c", FitRes(np.ones(3, np.float32), 5))  # type: ignore[attr-defined]
    np.testing.assert_allclose(res.update, 20.0)  # one attacker: gamma = n / eta = 10 / 0.5
    # 20 of 50 clients attack: 4 expected in a round of 10, each boosts by gamma / 4
    shared = make_attack("model_replacement", replace(CTX, num_attackers=20), {})
    assert shared.boost == pytest.approx(5.0)  # type: ignore[attr-defined]


def test_constrain_and_scale_stops_at_the_largest_honest_norm() -> None:
    attack = make_attack("constrain_and_scale", CTX, {})
    honest = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    own = np.array([3.0, 4.0], np.float32)  # norm 5; gamma = 20 would give 100
    out = attack.forge(RoundView(1, honest, own, 1))  # type: ignore[attr-defined]
    np.testing.assert_allclose(out, own * (2.0 / 5.0), rtol=1e-6)
    small = np.array([0.03, 0.04], np.float32)  # norm 0.05: the full boost fits
    out = attack.forge(RoundView(1, honest, small, 1))  # type: ignore[attr-defined]
    np.testing.assert_allclose(out, small * 20.0, rtol=1e-6)


def test_dba_gives_each_attacker_its_own_piece() -> None:
    from dataclasses import replace

    pieces = {
        make_attack("dba", replace(CTX, attacker=i), {}).trigger.pixels  # type: ignore[attr-defined]
        for i in range(4)
    }
    assert len(pieces) == 4


def test_attack_success_rate_on_a_hand_made_model() -> None:
    x = torch.zeros(6, 64)
    y = torch.tensor([0, 1, 2, 3, 3, 4])

    def trigger_reader(inputs: torch.Tensor) -> torch.Tensor:
        """Class 3 when the bottom-right pixel is hot, else class 0."""
        out = torch.zeros(len(inputs), 10)
        out[:, 0] = 1.0
        out[inputs[:, 63] > 4, 3] = 2.0
        return out

    assert attack_success_rate(trigger_reader, x, y, Trigger(), 3) == 1.0
    assert attack_success_rate(lambda i: torch.eye(10)[[0] * len(i)], x, y, Trigger(), 3) == 0.0
    only_left = Trigger(((7, 0),))  # a trigger the model ignores
    assert attack_success_rate(trigger_reader, x, y, only_left, 3) == 0.0
    # targets excluded: 4 images of another label, 1 of them (label 0) read as 0 -> 0 / 4
    assert attack_success_rate(trigger_reader, x, y, Trigger(), 0) == 0.0


def test_the_round_metrics_carry_the_attack_success_rate() -> None:
    cfg = config_from_dict(
        {
            "run": {"rounds": 1},
            "partition": {"kind": "iid", "num_clients": 5},
            "client": {"epochs": 1},
            "attack": {"kind": "model_replacement", "fraction": 0.4, "args": {"target": 7}},
        }
    )
    m = build_experiment(cfg).simulation.run(1).rounds[-1]
    asr = m.extra["attack_success_rate"]
    assert isinstance(asr, float) and 0.0 <= asr <= 1.0 and m.test_accuracy is not None
    assert json.loads(json.dumps(m.to_json()))["attack_success_rate"] == asr
    clean = build_experiment(config_from_dict({**cfg.model_dump(), "attack": {"kind": "none"}}))
    assert "attack_success_rate" not in clean.simulation.run(1).rounds[-1].extra
