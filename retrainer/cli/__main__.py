"""`python -m retrainer.cli`: the `retrain` command."""

import sys

from retrainer.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
