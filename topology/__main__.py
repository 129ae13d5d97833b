"""Entry point of ``python -m topology`` (see :mod:`topology.cli`)."""

import sys

from .cli import main

sys.exit(main())
