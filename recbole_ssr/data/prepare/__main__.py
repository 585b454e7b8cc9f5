"""``python -m recbole_ssr.data.prepare``: see :mod:`recbole_ssr.data.prepare`."""

import sys

from recbole_ssr.data.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main())
