"""``python -m greenflow.cli``: the ``greenflow`` command."""

import sys

from greenflow.cli import main

sys.exit(main())
