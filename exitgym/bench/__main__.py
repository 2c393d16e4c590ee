"""``python -m exitgym.bench --out DIR`` (the same as ``exitgym bench``)."""

from exitgym.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
