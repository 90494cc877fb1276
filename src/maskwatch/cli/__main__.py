"""``python -m maskwatch.cli``: the same as the ``maskwatch`` command."""

import sys

from maskwatch.cli import main

sys.exit(main())
