"""``python -m diagnostics.video RUN ...``: see :mod:`diagnostics.video.cli`."""

import sys

# the package's main, so that jobs pickle as diagnostics.video.frames.Job (importable by workers)
from diagnostics.video.cli import main

sys.exit(main())
