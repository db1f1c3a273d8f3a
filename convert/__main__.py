"""``python -m convert`` is the same as ``audioldm-convert``."""

import sys

from convert.cli import main

sys.exit(main())
