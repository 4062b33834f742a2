"""``python -m fstore_flow MODULE[:ATTR]``: serve MODULE's flows to an fstore worker."""

import sys

from ._sidecar import main

sys.exit(main(sys.argv))
