"""Training diagnostics for any PyTorch loop, logged to TensorBoard.

``Diagnostics`` attaches activation, weight and gradient statistics to named models; ``Writer`` is
the only code that touches TensorBoard.
"""

from .core import Diagnostics
from .hooks import Hooks, select_modules, unwrap
from .stats import HistSpec, accumulate, histogram, summarize
from .writer import Writer

__all__ = [
    "Diagnostics",
    "HistSpec",
    "Hooks",
    "Writer",
    "accumulate",
    "histogram",
    "select_modules",
    "summarize",
    "unwrap",
]
