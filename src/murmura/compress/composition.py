"""Which settings an uplink codec composes with; checked when a config is loaded.

- Secure aggregation (``murmura.privacy.secagg``) sums masked integers, so only a codec whose
  integers add up composes: ``quantize`` (``bits`` 8) quantises inside the protocol
  to levels on a public grid and masks mod 2**16, with at most ``max_clients(8)`` = 258
  clients per round so the sum cannot wrap. Every other codec is refused
  with its reason: floats do not add mod 2**k, QSGD and per-bucket scales are per-client
  (they would leak the client's norm or range), and sparsifiers' per-client indices cannot
  be summed under masks and would tell the server which coordinates each client changed.
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
        _check_secagg(cfg)
        return
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


_NOT_SUMMABLE = {
    "float16": "half-precision floats do not add up under masks mod 2**k",
    "bfloat16": "bfloat16 floats do not add up under masks mod 2**k",
    "qsgd": "QSGD scales each client's levels by its own norm, a per-client scale the server "
    "would need (and learn) to decode",
    "topk": "each client's top-k indices differ, cannot be summed under masks and would tell "
    "the server which coordinates each client changed most",
    "topkq": "each client's top-k indices differ, cannot be summed under masks and would tell "
    "the server which coordinates each client changed most",
    "randk": "each client's random indices differ and cannot be summed under masks (a random-k "
    "mask shared per round would compose but is not implemented)",
    "sign": "scaled signs carry each client's own scale and need error feedback per client",
}


def _check_secagg(cfg: Config) -> None:
    """Only ``quantize`` on a public grid composes with SecAgg+; the ring must hold the sum."""
    from murmura.privacy.secagg.quantize import RING_BITS, max_clients, ring_bits_needed

    c, head = cfg.compression, f"compression.uplink = {cfg.compression.uplink!r}"
    if c.uplink != "quantize":
        why = _NOT_SUMMABLE.get(c.uplink, "its payload is not integers that add up")
        raise ValueError(
            f"{head} with secagg.enabled = true: {why}; use compression.uplink = 'quantize' "
            "(levels on a public grid, summed mod 2**16) or 'none'"
        )
    extra = sorted(set(c.args) - {"bits"})
    if extra:
        raise ValueError(
            f"compression.args {extra} with secagg.enabled = true: under secure aggregation "
            "'quantize' uses one public grid from secagg.clip and secagg.max_weight (a "
            "per-bucket scale would leak each client's range); only 'bits' applies"
        )
    bits = int(c.args.get("bits", 8))
    if bits != 8:
        raise ValueError(
            f"compression.args.bits = {bits} with secagg.enabled = true: secure aggregation "
            "sums 8-bit levels in a 16-bit ring, where fewer bits would save no bytes; use bits = 8"
        )
    if c.error_feedback:
        raise ValueError(
            "compression.error_feedback = true with secagg.enabled = true: the quantiser is "
            "unbiased and runs inside the protocol, which keeps no per-client residual"
        )
    if cfg.secagg.rounding != "stochastic":
        raise ValueError(
            f"secagg.rounding = {cfg.secagg.rounding!r} with {head}: rounding to {bits}-bit "
            "levels must be stochastic to stay unbiased"
        )
    # central DP samples each client independently (Poisson): any round may hold all of them
    n = cfg.partition.num_clients if cfg.privacy.mode == "central" else cfg.cohort_size()
    if n > max_clients(bits):
        raise ValueError(
            f"{head} (bits = {bits}) with secagg.enabled = true and up to {n} clients per round: "
            f"their summed levels need {ring_bits_needed(bits, n)} bits, the {RING_BITS}-bit "
            f"ring holds at most {max_clients(bits)} clients at {bits} bits; use fewer bits "
            "or fewer clients per round"
        )


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
