"""``python -m bench``: the benchmark (``--help`` for its options)."""

import sys

from .run import main

sys.exit(main())
