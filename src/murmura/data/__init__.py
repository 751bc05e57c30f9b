"""Client datasets and the partitioners that split a dataset across clients."""

from murmura.data.federated import ArrayFederatedDataset, FederatedDataset
from murmura.data.holdout import HeldOutData, LocalHoldout, hold_out
from murmura.data.partition import PARTITIONERS, partition

__all__ = [
    "PARTITIONERS",
    "ArrayFederatedDataset",
    "FederatedDataset",
    "HeldOutData",
    "LocalHoldout",
    "hold_out",
    "partition",
]
