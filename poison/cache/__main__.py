"""``python -m poison.cache``: the same as ``cascade-poison cache``."""

import sys

from poison.cache import main

sys.exit(main())
