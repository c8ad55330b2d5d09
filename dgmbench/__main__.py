"""``python -m dgmbench`` = the ``dgmbench`` command (used by the Snakemake rules, so they also run in a
conda environment where the package is importable from the repository but not installed)."""

import sys

from .cli import main

sys.exit(main())
