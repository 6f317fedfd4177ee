"""`elt bench memory` as a script: see `python benchmarks/memory_looped_vs_unique.py --help` and
docs/benchmarks.md.

PYTHONPATH=src python benchmarks/memory_looped_vs_unique.py [options]
(JSON into benchmarks/results/)
"""

import sys

from elt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["memory", *sys.argv[1:]]))
