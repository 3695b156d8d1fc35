"""``python -m tigasepy.loadtest``."""

import sys

from tigasepy.loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
