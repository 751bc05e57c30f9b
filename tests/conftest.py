"""Suite-wide settings: one torch thread per process, and reproducible property tests.

Test models are tiny; with several test processes on two cores, idle OpenMP threads spinning
for work cost far more than they give.

Hypothesis draws the same examples on every run (profile "repro"), so `make test` passes or
fails the same way on every machine; `HYPOTHESIS_PROFILE=explore` draws fresh random examples
to hunt for new counterexamples.
"""

import os

import torch
from hypothesis import settings

torch.set_num_threads(1)

settings.register_profile("repro", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))
