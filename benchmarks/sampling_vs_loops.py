"""`elt bench sampling` as a script: see `python benchmarks/sampling_vs_loops.py --help` and
docs/benchmarks.md.

PYTHONPATH=src python benchmarks/sampling_vs_loops.py [options]   (JSON into benchmarks/results/)
"""

import sys

from elt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["sampling", *sys.argv[1:]]))
