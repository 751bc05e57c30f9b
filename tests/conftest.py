"""Suite-wide settings: one torch thread per process, as the simulation uses by default.

Test models are tiny; with several test processes on two cores, idle OpenMP threads spinning
for work cost far more than they give.
"""

import torch

torch.set_num_threads(1)
