"""``python -m recbole_ssr.prepare``: see :mod:`recbole_ssr.prepare`."""

import sys

from recbole_ssr.prepare.cli import main

if __name__ == "__main__":
    sys.exit(main())
