import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# On 2 cores a step with 2 torch threads ran 6-15x slower than with 1: tests pin 1 thread.
torch.set_num_threads(1)


# One data cache for the whole session (and across xdist workers): the built-in data is made once.
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.getbasetemp().parent / "fieldscope-cache"
    d.mkdir(exist_ok=True)
    return d
