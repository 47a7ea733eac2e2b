"""``python -m pictag``."""

import sys

from pictag.cli import console_main

sys.exit(console_main())
