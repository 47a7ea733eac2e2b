"""``python -m pictag``."""

import sys

from pictag.cli import main

sys.exit(main())
