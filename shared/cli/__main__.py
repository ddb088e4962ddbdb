"""``python -m shared.cli``: the ``ckpt`` command without the installed script."""

from shared.cli import main

raise SystemExit(main())
