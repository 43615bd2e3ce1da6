"""`python -m bot_bottle`: runs the core CLI."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
