"""``python -m exitgym.bench --out DIR`` (the same as ``exitgym bench``)."""

from exitgym.bench import main

raise SystemExit(main())
