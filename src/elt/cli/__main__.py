"""``python -m elt.cli`` = the ``elt`` command (e.g. under torchrun)."""

import sys

from elt.cli import main

sys.exit(main())
