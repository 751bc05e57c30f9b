"""Which settings an uplink codec composes with; checked when a config is loaded.

- Secure aggregation masks each client's fixed-point update mod 2**32 (``murmura.privacy
  .secagg``) and the server sums the masked integers: a codec's payload (indices, scales,
  packed levels) cannot be summed under masks, and per-client top-k indices would also tell
  the server which coordinates each client changed most. Refused with the reason.
- Peer-to-peer mixing of compressed models needs CHOCO-gossip's public copies (Koloskova et
  al. 2019), not implemented: refused rather than mixing uncompressed models unannounced.
- Differential privacy composes: local DP clips and noises on the client before encoding
  (the codec post-processes a private update); central DP clips the decoded updates and
  adds noise to their aggregate on the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from murmura.config import Config


def check_composition(cfg: Config) -> None:
    """Raise ``ValueError`` (a config error at load time) naming why ``cfg`` cannot run."""
    c = cfg.compression
    if c.downlink != "none" and cfg.topology.kind not in ("star", "tree"):
        raise ValueError(
            f"compression.downlink = {c.downlink!r} with topology.kind = "
            f"{cfg.topology.kind!r}: P2P has no downlink (peers exchange models); use a star "
            "or a tree"
        )
    if c.uplink == "none":
        return
    if cfg.secagg.enabled:
        raise ValueError(
            f"compression.uplink = {c.uplink!r} with secagg.enabled = true: secure aggregation "
            "sums masked fixed-point integers mod 2**32, which a codec's payload (indices, "
            "scales, packed levels) is not; set compression.uplink = 'none' or disable secagg"
        )
    if cfg.topology.kind not in ("star", "tree"):
        raise ValueError(
            f"compression.uplink = {c.uplink!r} with topology.kind = {cfg.topology.kind!r}: "
            "compressed gossip needs CHOCO-gossip (Koloskova et al. 2019), which murmura does "
            "not implement yet; peers would mix uncompressed models. Use a star or a tree"
        )
