"""``python -m exitgym.cli``: the ``exitgym`` command where the console script is not on PATH."""

from exitgym.cli import main

raise SystemExit(main())
