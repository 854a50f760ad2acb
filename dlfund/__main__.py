"""``python -m dlfund`` is the ``dlfund`` command."""

import sys

from dlfund.cli import main

sys.exit(main())
