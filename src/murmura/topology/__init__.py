"""Peer-to-peer topologies: graphs, Metropolis-Hastings mixing weights and gossip math."""

from murmura.topology.gossip import (
    adaptive_tau,
    clip,
    clipped_gossip,
    clipped_mix,
    consensus_distance,
    gossip_average,
    gossip_step,
    matching_matrix,
    random_matching,
    random_pairs,
    robust_neighbourhood_mix,
)
from murmura.topology.graphs import TOPOLOGIES, build_topology, describe
from murmura.topology.mixing import (
    metropolis_hastings,
    neighbour_weights,
    renormalize,
    spectral_gap,
    without_nodes,
)

__all__ = [
    "TOPOLOGIES",
    "adaptive_tau",
    "build_topology",
    "clip",
    "clipped_gossip",
    "clipped_mix",
    "consensus_distance",
    "describe",
    "gossip_average",
    "gossip_step",
    "matching_matrix",
    "metropolis_hastings",
    "neighbour_weights",
    "random_matching",
    "random_pairs",
    "renormalize",
    "robust_neighbourhood_mix",
    "spectral_gap",
    "without_nodes",
]
