"""``python -m scheduler`` is the ``apportion`` command."""

import sys

from scheduler.cli import main

sys.exit(main())
