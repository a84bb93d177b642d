"""`python -m losskit` runs the `losskit` command."""

import sys

from .cli import main

sys.exit(main())
