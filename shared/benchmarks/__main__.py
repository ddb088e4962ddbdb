"""``python -m shared.benchmarks``: see ``shared/benchmarks/runner.py``."""

from shared.benchmarks.runner import main

raise SystemExit(main())
