"""Secure aggregation: SecAgg+ (Bell et al. 2020) on top of SecAgg (Bonawitz et al. 2017).

The server learns only the weighted sum of the surviving clients' quantised updates and
their total weight. ``run_secagg_round`` drives a whole round in memory; ``SecAggClient``
and ``SecAggServer`` expose one method per protocol message for a transport to call.

Threat model: an honest-but-curious server and fewer than t colluding clients per
neighbourhood learn nothing beyond the sum. Tampered messages (forged key signatures,
ciphertexts failing AES-GCM) are detected and their sender excluded. Not implemented: the
consistency-check round of Bonawitz et al.'s actively secure variant, which stops a
malicious server from telling different clients different dropout sets; a client only
checks that the sets it is shown are consistent with what it knows. A malicious client can
also get a neighbour excluded by reporting it falsely (a denial of service, never a leak).
"""

from murmura.privacy.secagg.client import SecAggClient
from murmura.privacy.secagg.config import (
    SecAggConfig,
    Stage,
    default_neighbours,
    default_threshold,
)
from murmura.privacy.secagg.errors import SecAggAbort
from murmura.privacy.secagg.quantize import Quantizer
from murmura.privacy.secagg.server import SecAggResult, SecAggServer
from murmura.privacy.secagg.simulation import run_secagg_round

__all__ = [
    "Quantizer",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "Stage",
    "default_neighbours",
    "default_threshold",
    "run_secagg_round",
]
