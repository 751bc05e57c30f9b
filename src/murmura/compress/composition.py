"""Which settings an uplink codec composes with; checked when a config is loaded.

- Secure aggregation masks each client's fixed-point update mod 2**32 (``murmura.privacy
  .secagg``) and the server sums the masked integers: a codec's payload (indices, scales,
  packed levels) cannot be summed under masks, and per-client top-k indices would also tell
  the server which coordinates each client changed most. Refused with the reason.
- Peer-to-peer: CHOCO-gossip (``murmura.compress.choco``) with ``gossip_step``, plain
  weighted mixing only: robust mixing, Byzantine peers, time-varying graphs and local DP
  are refused.
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
    p2p = cfg.topology.kind not in ("star", "tree")
    if p2p != (c.gossip_step is not None):
        raise ValueError(
            "compression.gossip_step (CHOCO-gossip's consensus step) is required with a P2P "
            "uplink and means nothing in a star or a tree"
            if p2p
            else f"compression.gossip_step is set but topology.kind = {cfg.topology.kind!r}: "
            "it is CHOCO-gossip's step, P2P only"
        )
    if p2p:
        _check_choco(cfg)


def _check_choco(cfg: Config) -> None:
    """CHOCO-gossip's plain weighted mixing composes with none of these (yet)."""
    t = cfg.topology
    clashes = {
        "topology.robust != 'none'": t.robust != "none",
        "Byzantine peers": t.byzantine_fraction > 0 or bool(t.byzantine_peers),
        "topology.time_varying = true": t.time_varying,
        "privacy.mode = 'local'": cfg.privacy.mode == "local",
    }
    for what, clash in clashes.items():
        if clash:
            raise ValueError(
                f"compression.uplink = {cfg.compression.uplink!r} (CHOCO-gossip) with {what}: "
                "CHOCO mixes public copies updated by compressed differences, which robust "
                "mixing, attackers, a new neighbour each round and noised models would not "
                "keep consistent; use compression.uplink = 'none' here"
            )
