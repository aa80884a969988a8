"""Print the README's Results tables from ``experiments/results/<dataset>/summary.json``.

``python experiments/results_table.py [RESULTS_DIR] [--output FILE]`` is the same as
``kangnn report [RESULTS_DIR] [--output FILE]``; see :func:`kangnn.reports.results_table`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kangnn.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = [str(Path(__file__).parent / "results"), *args]
    sys.exit(main(["report", *args]))
