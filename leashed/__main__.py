"""``python -m leashed`` is the ``leashed`` command."""

import sys

from leashed.cli import main

sys.exit(main())
