"""`python -m chaosinject.cli ARGS`: the same as the `chaos-inject` console script."""

import sys

from .main import main

sys.exit(main())
