"""Config table [compression]: the codec of the clients' uplink (``murmura.compress``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from murmura.config.base import Section


class CompressionSection(Section):
    """[compression]: updates sent with codec ``uplink`` (``args``); "none" sends float32.

    ``error_feedback`` keeps each client's residual (None: on for the biased codecs topk,
    randk and sign, off for the unbiased ones). ``shared_mask`` (randk only) draws one index
    set per round for every client instead of one per client. Local DP noise is added before
    encoding, central DP noise after decoding and aggregating. Star and tree (the clients'
    uplink to their edge), simulated and deployed; P2P and secure aggregation refuse it.
    """

    uplink: str = "none"
    args: dict[str, Any] = Field(default_factory=dict)
    error_feedback: bool | None = None
    shared_mask: bool = False

    @model_validator(mode="after")
    def _codec_exists(self) -> CompressionSection:
        if self.uplink == "none":
            if self.args or self.shared_mask or self.error_feedback:
                raise ValueError("compression.args, error_feedback, shared_mask need an uplink")
            return self
        from murmura.compress import make_codec
        from murmura.errors import RegistryError

        try:
            make_codec(self.uplink, **self.args)
        except RegistryError as exc:
            raise ValueError(f"compression.uplink: {exc}") from None
        if self.shared_mask and self.uplink != "randk":
            raise ValueError(
                f"compression.shared_mask = true needs uplink = 'randk', got {self.uplink!r}"
            )
        return self
