"""The ``tabular`` task: rows of numeric and categorical features, a class or a real value.

A softmax (logistic) regression (``model = "linear"``) or an MLP (``model = "mlp"``, widths
``hidden``) over the schema's encoded features: numeric columns, then one-hot columns of each
categorical one, in the schema's order. ``mean`` and ``scale`` standardise the numeric columns
(``(x - mean) / scale``, in the schema's order of numeric features); they are plain arguments
so that a federation can compute them once and give every site the same (``[stats]
standardise = true`` fits them from the federated statistics); without them the values are
used as they are. Classification trains with cross-entropy, regression
(``schema.regression``) with the mean squared error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from murmura.analytics.standardise import numeric_columns
from murmura.data.schema import TabularSchema
from murmura.data.validate import LocalData
from murmura.errors import ConfigError
from murmura.tasks.own_data import FileTask


class TabularTask(FileTask):
    """Tabular data from CSV/Parquet/.npz files: softmax regression or an MLP."""

    name = "tabular"

    def __init__(
        self,
        schema: Mapping[str, Any],
        model: str = "mlp",
        hidden: Sequence[int] = (64,),
        mean: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        data: str | None = None,
        test: str | None = None,
    ) -> None:
        super().__init__(schema, data, test)
        if not isinstance(self.schema, TabularSchema):
            raise ConfigError("task 'tabular': task.args.schema.kind must be 'tabular'")
        self.table: TabularSchema = self.schema
        if model not in ("linear", "mlp"):
            raise ConfigError(f"task.args.model: 'linear' or 'mlp', got {model!r}")
        if any(int(h) < 1 for h in hidden) or (model == "mlp" and not hidden):
            raise ConfigError(f"task.args.hidden: positive layer widths, got {list(hidden)}")
        self.model, self.hidden = model, tuple(int(h) for h in hidden)
        self.standardise = _standardisation(self.table, mean, scale)

    def build_model(self) -> nn.Module:
        """Linear, or an MLP with ReLU, from the encoded width to one output per class."""
        widths = [self.table.input_dim, *(self.hidden if self.model == "mlp" else ())]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], self.table.output_dim))
        return nn.Sequential(*layers)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, or the mean squared error for regression."""
        if self.table.regression:
            return functional.mse_loss(outputs.squeeze(-1), targets)
        return functional.cross_entropy(outputs, targets)

    def prepare(self, local: LocalData) -> LocalData:
        """The numeric columns standardised, when a standardisation was given."""
        if self.standardise is None:
            return local
        cols, mean, scale = self.standardise
        x = local.x
        x[:, cols] = (x[:, cols] - mean) / scale
        return replace(local, x=x)


Standardisation = tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]


def _standardisation(
    schema: TabularSchema, mean: Sequence[float] | None, scale: Sequence[float] | None
) -> Standardisation | None:
    """Encoded columns of the numeric features with their mean and scale; None without both."""
    if mean is None and scale is None:
        return None
    n = len(schema.numeric)
    if mean is None or scale is None or len(mean) != n or len(scale) != n:
        raise ConfigError(
            f"task.args.mean and task.args.scale: one value per numeric feature ({n}: "
            f"{', '.join(schema.numeric)}), both or neither"
        )
    s = np.asarray(scale, np.float32)
    if not (np.isfinite(s).all() and (s > 0).all()) or not np.isfinite(mean).all():
        raise ConfigError("task.args.scale: finite values > 0 (and a finite mean) are required")
    return numeric_columns(schema), np.asarray(mean, np.float32), s
