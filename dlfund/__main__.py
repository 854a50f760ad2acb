"""``python -m dlfund`` is the ``dlfund`` command."""

from dlfund.cli import exit_with, main

exit_with(main())
