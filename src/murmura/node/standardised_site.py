"""A site of a ``[stats] standardise`` job: it trains on its rows scaled as the federation says.

Before training, the site answers the statistics round from its raw rows (``local_data``).
The coordinator then sends the fitted ``mean``/``scale`` in every FIT instruction
(``murmura.analytics.standardise.STANDARDISE_KEY``); on the first one the site builds its
learner on its rows standardised with them (``build``, the job's ``tabular`` task given the
pair, as the simulation builds it), and every later one must carry the same pair. A FIT
without it, or an evaluation before any, is refused with the reason: a site never trains or
evaluates on rows scaled differently from the others'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from murmura.analytics.standardise import STANDARDISE_KEY, scaling_from_json
from murmura.errors import InstructionRejected
from murmura.node.worker import FitClient
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

log = logging.getLogger(__name__)

Scaling = dict[str, list[float]]


class StandardisedSite:
    """The site's learner, built on the first FIT from the scaling it carries."""

    def __init__(
        self, name: str, raw: Any, features: int, build: Callable[[Scaling], FitClient]
    ) -> None:
        self.name, self.raw, self.features, self.build = name, raw, features, build
        self.node_id: str = raw.node_id
        self.scaling: Scaling | None = None
        self.learner: FitClient | None = None

    @property
    def model(self) -> object:
        """The task's model (its layout is what every instruction's model must have)."""
        return self.raw.model

    def local_data(self) -> Any:
        """The raw training rows and labels: what the statistics round summarises."""
        return self.raw.local_data()

    def fit(self, ins: FitIns) -> FitRes:
        """Train on the standardised rows; the scaling is taken out of the config first."""
        config = dict(ins.config)
        learner = self._learner(config.pop(STANDARDISE_KEY, None))
        return learner.fit(replace(ins, config=config))

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Evaluate on the standardised held-out rows, once a FIT has given the scaling."""
        if self.learner is None:
            raise InstructionRejected(
                "no standardisation received yet ([stats] standardise): this site evaluates "
                "after its first training round"
            )
        evaluate = getattr(self.learner, "evaluate", None)
        return evaluate(weights) if callable(evaluate) else EvaluateRes(0.0, 0)

    def _learner(self, text: object) -> FitClient:
        if text is None:
            raise InstructionRejected(
                f"the job standardises its features ([stats] standardise) but the instruction "
                f"carries no {STANDARDISE_KEY!r}: is the coordinator on the same job config?"
            )
        scaling = scaling_from_json(text)
        if len(scaling["mean"]) != self.features:
            raise InstructionRejected(
                f"{STANDARDISE_KEY}: {len(scaling['mean'])} values for {self.features} numeric "
                "features"
            )
        if self.learner is None:
            self.learner, self.scaling = self.build(scaling), scaling
            log.info(
                "site %s: numeric features standardised with the federation's mean %s and "
                "scale %s", self.name, scaling["mean"], scaling["scale"],
            )  # fmt: skip
        elif scaling != self.scaling:
            raise InstructionRejected(f"{STANDARDISE_KEY} differs from the one this run sent")
        return self.learner
