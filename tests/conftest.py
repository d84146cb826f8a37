import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

# On 2 cores a step with 2 torch threads ran 6-15x slower than with 1: tests pin 1 thread.
torch.set_num_threads(1)
