"""Entry point for ``python -m smartpop``."""

from __future__ import annotations

import sys

from smartpop.cli import main

if __name__ == "__main__":
    sys.exit(main())
