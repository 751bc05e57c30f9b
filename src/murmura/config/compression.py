"""Config table [compression]: the codecs of the clients' uplink and downlink."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from murmura.config.base import Section


class CompressionSection(Section):
    """[compression]: updates sent with codec ``uplink`` (``args``); "none" sends float32.

    ``error_feedback`` keeps each client's residual (None: on for the biased codecs topk, topkq,
    randk and sign, off for the unbiased ones). ``shared_mask`` (randk only) draws one index
    set per round for every client instead of one per client. Local DP noise is added before
    encoding, central DP noise after decoding and aggregating. Star and tree (the clients'
    uplink to their edge), simulated and deployed. With ``[secagg]`` only ``quantize`` (8 bits)
    composes: SecAgg+ masks 8-bit levels on a public grid mod 2^16 (2 bytes a word instead
    of 4), at most 258 clients per round; the other codecs are refused with the reason.

    In P2P, peers exchange ``uplink``-compressed differences by CHOCO-gossip with consensus
    step ``gossip_step`` (required there, refused elsewhere; ``murmura.compress.choco``),
    simulated and deployed (``murmura peer``, which checkpoints the public copies).

    ``downlink`` (``downlink_args``) sends each client the model as a delta against the model
    it last received (``murmura.compress.downlink``): simulated, and deployed from ``murmura
    server`` to a star's clients and from ``murmura edge`` to its leaves
    (``murmura.node.downlink``); not with ``[secagg]`` deployed.
    """

    uplink: str = "none"
    args: dict[str, Any] = Field(default_factory=dict)
    error_feedback: bool | None = None
    shared_mask: bool = False
    gossip_step: float | None = Field(None, gt=0, le=1)
    downlink: str = "none"
    downlink_args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _downlink_exists(self) -> CompressionSection:
        if self.downlink == "none":
            if self.downlink_args:
                raise ValueError("compression.downlink_args need a downlink")
            return self
        _check_codec("downlink", self.downlink, self.downlink_args)
        return self

    @model_validator(mode="after")
    def _codec_exists(self) -> CompressionSection:
        if self.uplink == "none":
            if self.args or self.shared_mask or self.error_feedback:
                raise ValueError("compression.args, error_feedback, shared_mask need an uplink")
            return self
        _check_codec("uplink", self.uplink, self.args)
        if self.shared_mask and self.uplink != "randk":
            raise ValueError(
                f"compression.shared_mask = true needs uplink = 'randk', got {self.uplink!r}"
            )
        return self


def _check_codec(key: str, name: str, args: dict[str, Any]) -> None:
    """Build the codec once, so that a bad name or parameter fails at load time."""
    from murmura.compress import make_codec
    from murmura.errors import RegistryError

    try:
        make_codec(name, **args)
    except RegistryError as exc:
        raise ValueError(f"compression.{key}: {exc}") from None
