"""The ``[tracking]`` table: experiment tracking and model registration with MLflow."""

from __future__ import annotations

from pydantic import Field, model_validator

from murmura.config.base import Section


class TrackingSection(Section):
    """[tracking]: log the run to MLflow (``murmura run`` and ``murmura server``).

    ``mlflow = true`` logs the resolved config as params, every round's metrics with
    ``step = round``, tags and, at the end, the run folder as artifacts. ``tracking_uri``
    unset: a local store (``mlflow.db``, ``mlartifacts/``) in the run folder's parent;
    an ``http://`` URI: a tracking server. ``register_as`` registers the final model under
    this name in MLflow's Model Registry, with its lineage and model card. Needs the
    ``murmura[mlflow]`` extra.
    """

    mlflow: bool = False
    tracking_uri: str | None = None
    experiment: str = Field("murmura", min_length=1)
    register_as: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _needs_mlflow(self) -> TrackingSection:
        if not self.mlflow:
            for key in ("tracking_uri", "register_as"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"tracking.{key} is set but tracking.mlflow = false: nothing would be "
                        "tracked; set tracking.mlflow = true or remove it"
                    )
        return self
