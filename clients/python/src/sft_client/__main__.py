"""``python -m sft_client``: the ``sft`` command."""

import sys

from .cli import main

sys.exit(main())
