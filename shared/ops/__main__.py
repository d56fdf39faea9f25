"""``python -m shared.ops``: the ``eventful`` console script, where it is not installed."""

import sys

from shared.ops.cli import main

sys.exit(main())
