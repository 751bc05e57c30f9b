"""The ``image`` task: a small CNN over image folders (one sub-folder per class).

Two 3x3 convolutions with GroupNorm (Wu and He 2018) instead of batch-norm, so the model keeps
no running statistics (buffers) and the vectorised executor still applies, then a global
average pool and a linear classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from murmura.data.schema import ImageSchema
from murmura.errors import ConfigError
from murmura.tasks.own_data import FileTask


class ImageTask(FileTask):
    """Images from class folders or .npz files: a two-layer CNN with GroupNorm."""

    name = "image"

    def __init__(
        self,
        schema: Mapping[str, Any],
        width: int = 16,
        data: str | None = None,
        test: str | None = None,
    ) -> None:
        super().__init__(schema, data, test)
        if not isinstance(self.schema, ImageSchema):
            raise ConfigError("task 'image': task.args.schema.kind must be 'image'")
        if width < 4 or width % 4:
            raise ConfigError(f"task.args.width: a multiple of 4 (GroupNorm groups), got {width}")
        self.images: ImageSchema = self.schema
        self.width = width

    def build_model(self) -> nn.Module:
        """conv-GN-ReLU, pool, conv-GN-ReLU, global average pool, linear."""
        c, w = self.images.channels, self.width
        return nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1),
            nn.GroupNorm(4, w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.GroupNorm(4, 2 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * w, self.images.output_dim),
        )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy."""
        return functional.cross_entropy(outputs, targets)
