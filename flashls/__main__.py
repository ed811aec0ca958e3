"""`python -m flashls` runs the command line."""

import sys

from flashls.cli import main

sys.exit(main())
