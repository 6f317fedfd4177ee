"""``python -m elt.bench`` = ``elt bench``."""

import sys

from elt.cli.bench import main

sys.exit(main())
