import sys

from retrainer.cli.app import main

sys.exit(main())
