"""`python -m service.cli ...` is the `lrsearch` command (tests and workers start it so)."""

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
