"""Privacy accountants backed by Google's ``dp-accounting`` (RDP and PLD).

The interface follows Opacus' accountants: ``step``, ``get_epsilon``, ``state_dict`` and
``load_state_dict``, with a registry ``create_accountant(name)``. ``dp-accounting`` composes
events but keeps no serialisable state, so each accountant here keeps its own history of
``(noise_multiplier, sample_rate, steps)`` and rebuilds the ``dp-accounting`` object from it:
the state is plain JSON, checkpointed with the model, and a resumed run reports the same
epsilon as an uninterrupted one.

The mechanism is the sampled Gaussian mechanism of DP-FedAvg (McMahan et al. 2018) and DP-SGD
(Abadi et al. 2016, "Deep learning with differential privacy"): Poisson sampling with rate
``q`` (``rdp``, ``pld``), or a fixed-size sample of ``q N`` out of ``N`` (``rdp_fixed_size``).
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from murmura.errors import ConfigError
from murmura.privacy.dp_log import quiet_convergence_warnings
from murmura.registry import Registry

if TYPE_CHECKING:
    import dp_accounting


def _dp() -> ModuleType:
    """dp-accounting, imported on first use: it pulls in scipy.signal (~0.8 s at start-up)."""
    import dp_accounting

    module: ModuleType = dp_accounting
    return module


log = logging.getLogger(__name__)

_VERSION = 1
Entry = tuple[float, float, int]
"""One run of identical steps: (noise_multiplier, sample_rate, steps)."""


def _check_step(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


class Accountant(abc.ABC):
    """Tracks the privacy spent by repeated sampled Gaussian mechanisms."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        self._history: list[Entry] = []
        self._backend: dp_accounting.PrivacyAccountant | None = None

    @abc.abstractmethod
    def _new_backend(self) -> dp_accounting.PrivacyAccountant:
        """Return a fresh, empty ``dp-accounting`` accountant."""

    @abc.abstractmethod
    def _event(self, noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
        """Return the ``dp-accounting`` event of one step."""

    def _params(self) -> dict[str, Any]:
        """Return the constructor parameters that a state must match to be loaded."""
        return {}

    @property
    def history(self) -> list[Entry]:
        """Steps composed so far, consecutive identical steps merged."""
        return list(self._history)

    @property
    def steps(self) -> int:
        """Total number of steps composed so far."""
        return sum(entry[2] for entry in self._history)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Compose ``steps`` sampled Gaussian mechanisms with these parameters."""
        _check_step(noise_multiplier, sample_rate, steps)
        self._event(noise_multiplier, sample_rate)  # refuse bad parameters now, not later
        z, q = float(noise_multiplier), float(sample_rate)
        if self._history and self._history[-1][:2] == (z, q):
            self._history[-1] = (z, q, self._history[-1][2] + steps)
        else:
            self._history.append((z, q, steps))
        self._backend = None

    def _build(self, history: list[Entry]) -> dp_accounting.PrivacyAccountant:
        backend = self._new_backend()
        events = [_dp().SelfComposedDpEvent(self._event(z, q), n) for z, q, n in history]
        if events:
            with quiet_convergence_warnings():  # RDP orders are evaluated when composed
                backend.compose(_dp().ComposedDpEvent(events))
        return backend

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far at this ``delta`` (0.0 before the first step)."""
        _check_delta(delta)
        if not self._history:
            return 0.0
        if self._backend is None:
            self._backend = self._build(self._history)
        with quiet_convergence_warnings():
            return float(self._backend.get_epsilon(delta))

    def epsilon_after(
        self, delta: float, noise_multiplier: float, sample_rate: float, steps: int = 1
    ) -> float:
        """Epsilon if ``steps`` more steps were taken; the accountant is not changed.

        A strategy calls this before a round to stop before ``target_epsilon`` is exceeded.
        """
        _check_delta(delta)
        _check_step(noise_multiplier, sample_rate, steps)
        trial = self.history + [(float(noise_multiplier), float(sample_rate), steps)]
        backend = self._build(trial)
        with quiet_convergence_warnings():
            return float(backend.get_epsilon(delta))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: kind, parameters and the composed history."""
        return {
            "kind": self.kind,
            "version": _VERSION,
            "params": self._params(),
            "history": [[z, q, n] for z, q, n in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict``; refuses a state of another kind."""
        kind, version = state.get("kind"), state.get("version")
        if kind != self.kind or version != _VERSION:
            raise ConfigError(
                f"cannot load a {kind!r} accountant state (version {version!r}) into a "
                f"{self.kind!r} accountant (version {_VERSION})"
            )
        if state.get("params", {}) != self._params():
            raise ConfigError(
                f"accountant state has parameters {state.get('params')!r}, "
                f"this {self.kind!r} accountant has {self._params()!r}"
            )
        history: list[Entry] = []
        for z, q, n in state["history"]:
            _check_step(float(z), float(q), int(n))
            history.append((float(z), float(q), int(n)))
        self._history = history
        self._backend = None
        log.info("accountant %s restored: %d steps", self.kind, self.steps)


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


ACCOUNTANTS: Registry[Callable[..., Accountant]] = Registry("accountant")

AccountantName = Literal["rdp", "pld"]
"""The accountants a run can use: ``[privacy] accountant`` and ``murmura privacy plan``.

Every murmura run samples clients (central DP) or batches (DP-SGD) by Poisson sampling, or
has every client release (local DP, ``q = 1``), which is what these two account for.
``rdp_fixed_size`` (a fixed-size cohort) stays available to library users but matches no
run's sampling, so neither the config nor the planner offers it.
"""


class _PoissonAccountant(Accountant):
    """Poisson sampling with rate ``q``, add/remove-one neighbours (sensitivity ``C``)."""

    def _event(self, noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
        return _dp().PoissonSampledDpEvent(sample_rate, _dp().GaussianDpEvent(noise_multiplier))


@ACCOUNTANTS.register("rdp")
class RdpAccountant(_PoissonAccountant):
    """Renyi DP accountant for the Poisson-sampled Gaussian mechanism."""

    kind = "rdp"

    def _new_backend(self) -> dp_accounting.PrivacyAccountant:
        return _dp().rdp.RdpAccountant()


@ACCOUNTANTS.register("pld")
class PldAccountant(_PoissonAccountant):
    """Privacy-loss-distribution accountant (tighter than RDP) for Poisson sampling."""

    kind = "pld"

    def _new_backend(self) -> dp_accounting.PrivacyAccountant:
        return _dp().pld.PLDAccountant()


@ACCOUNTANTS.register("rdp_fixed_size")
class FixedSizeRdpAccountant(Accountant):
    """RDP accountant for a fixed-size cohort of ``q N`` drawn without replacement from ``N``.

    Fixed-size sampling needs the replace-one relation (Wang et al. 2019), under which the
    L2 sensitivity of a sum of updates clipped to ``C`` is ``2 C``: noise ``N(0, (z C)^2)``
    is therefore accounted with noise multiplier ``z / 2``.
    """

    kind = "rdp_fixed_size"

    def __init__(self, population: int) -> None:
        super().__init__()
        if isinstance(population, bool) or not isinstance(population, int) or population < 1:
            raise ConfigError(f"population must be a positive integer, got {population!r}")
        self.population = population

    def _params(self) -> dict[str, Any]:
        return {"population": self.population}

    def sample_size(self, sample_rate: float) -> int:
        """Cohort size ``q N``; refuses a rate that is not a whole number of clients."""
        size = round(sample_rate * self.population)
        if size < 1 or abs(size - sample_rate * self.population) > 1e-6 * self.population:
            raise ValueError(
                f"sample_rate {sample_rate} of population {self.population} is not a whole "
                f"number of clients; use sample_rate = k / {self.population}"
            )
        return int(size)

    def _new_backend(self) -> dp_accounting.PrivacyAccountant:
        return _dp().rdp.RdpAccountant(neighboring_relation=_dp().NeighboringRelation.REPLACE_ONE)

    def _event(self, noise_multiplier: float, sample_rate: float) -> dp_accounting.DpEvent:
        return _dp().SampledWithoutReplacementDpEvent(
            self.population,
            self.sample_size(sample_rate),
            _dp().GaussianDpEvent(noise_multiplier / 2.0),
        )


def create_accountant(name: str, **params: Any) -> Accountant:
    """Build the accountant registered as ``name`` (``rdp``, ``pld``, ``rdp_fixed_size``)."""
    return ACCOUNTANTS.get(name)(**params)


def accountant_from_state(state: dict[str, Any]) -> Accountant:
    """Rebuild an accountant of the kind, parameters and history saved in ``state``."""
    accountant = create_accountant(str(state.get("kind")), **state.get("params", {}))
    accountant.load_state_dict(state)
    return accountant


@dataclass(frozen=True, slots=True)
class NoisePlan:
    """A noise multiplier and the epsilon it reaches after ``rounds`` sampled steps."""

    noise_multiplier: float
    epsilon: float
    target_epsilon: float
    delta: float
    rounds: int
    sample_rate: float
    accountant: str


_Z_MIN, _Z_MAX = 1e-3, 1e4


def _epsilon_at(z: float, setting: dict[str, Any]) -> float:
    accountant = create_accountant(setting["name"], **setting["params"])
    accountant.step(z, setting["sample_rate"], setting["rounds"])
    return accountant.get_epsilon(setting["delta"])


def _bracket(target: float, setting: dict[str, Any]) -> tuple[float, float, float, float]:
    """Find ``lo < hi`` with eps(lo) > target >= eps(hi); returns (lo, eps(lo), hi, eps(hi))."""
    z, eps = 1.0, _epsilon_at(1.0, setting)
    if eps > target:
        while eps > target:
            lo, lo_eps, z = z, eps, z * 2.0
            if z > _Z_MAX:
                raise ConfigError(
                    f"epsilon {target} is out of reach: even noise multiplier {_Z_MAX:g} gives more"
                )
            eps = _epsilon_at(z, setting)
        return lo, lo_eps, z, eps
    while True:
        lo = z / 2.0
        if lo < _Z_MIN:
            return 0.0, math.inf, z, eps
        lo_eps = _epsilon_at(lo, setting)
        if lo_eps > target:
            return lo, lo_eps, z, eps
        z, eps = lo, lo_eps


def _next_guess(
    bracket: tuple[float, float, float, float],
    last: list[tuple[float, float]],
    aim: float,
    bisect: bool,
) -> float:
    """Next ``z`` inside the bracket: a secant step, or bisection when secants stall.

    Epsilon is close to a power law in ``z`` locally, so a secant through the two latest
    points in ``(log z, log eps)`` usually lands within tolerance in one or two evaluations;
    clamping into the bracket and bisecting whenever a step stalls keep the worst case close
    to that of plain bisection.
    """
    lo, _, hi, _ = bracket
    width = hi - lo
    (z0, e0), (z1, e1) = last[-2], last[-1]
    if bisect or lo <= 0 or not math.isfinite(e0) or e0 == e1 or z0 == z1:
        return lo + 0.5 * width
    slope = math.log(e1 / e0) / math.log(z1 / z0)
    guess = z1 * float((aim / e1) ** (1.0 / slope))
    return min(max(guess, lo + 0.05 * width), hi - 0.05 * width)


def _refine(
    bracket: tuple[float, float, float, float],
    target: float,
    tolerance: float,
    setting: dict[str, Any],
) -> tuple[float, float]:
    """Shrink the bracket until eps(hi) is in ``[(1 - tolerance) target, target]``."""
    last = [(bracket[0], bracket[1]), (bracket[2], bracket[3])]
    aim = (1.0 - tolerance / 2.0) * target
    bisect, widths = False, [bracket[2] - bracket[0]]
    for _ in range(100):
        lo, lo_eps, hi, hi_eps = bracket
        if hi_eps >= (1.0 - tolerance) * target or hi - lo < 1e-9 * hi:
            break
        z = _next_guess(bracket, last, aim, bisect)
        eps = _epsilon_at(z, setting)
        last.append((z, eps))
        bracket = (lo, lo_eps, z, eps) if eps <= target else (z, eps, hi, hi_eps)
        # secant steps that have not halved the bracket in two tries have stalled: bisect
        widths.append(bracket[2] - bracket[0])
        bisect = len(widths) >= 3 and widths[-1] > 0.5 * widths[-3] and not bisect
    return bracket[2], bracket[3]


def plan_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rounds: int,
    sample_rate: float,
    accountant: str = "rdp",
    *,
    tolerance: float = 0.01,
    **accountant_params: Any,
) -> NoisePlan:
    """Noise multiplier whose epsilon after ``rounds`` sampled steps is just within target.

    Safeguarded bisection on ``z`` (epsilon decreases as ``z`` grows) until the epsilon
    reached lies in ``[(1 - tolerance) * target_epsilon, target_epsilon]``: never above it.
    """
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ConfigError(f"target_epsilon must be a positive number, got {target_epsilon!r}")
    if not 0.0 < tolerance < 1.0:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance!r}")
    _check_delta(delta)
    _check_step(1.0, sample_rate, rounds)
    setting = {
        "name": accountant,
        "params": accountant_params,
        "delta": delta,
        "rounds": rounds,
        "sample_rate": sample_rate,
    }
    z, eps = _refine(_bracket(target_epsilon, setting), target_epsilon, tolerance, setting)
    log.info("noise plan: z=%.5g reaches epsilon %.5g (target %g)", z, eps, target_epsilon)
    return NoisePlan(z, eps, target_epsilon, delta, rounds, sample_rate, accountant)
