"""`elt bench train` as a script: see `python benchmarks/train_throughput.py --help` and
docs/benchmarks.md.

PYTHONPATH=src python benchmarks/train_throughput.py [options]   (JSON into benchmarks/results/)
"""

import sys

from elt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
