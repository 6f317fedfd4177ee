"""`elt bench trainer` as a script: see `python benchmarks/trainer_throughput.py --help` and
docs/benchmarks.md.

PYTHONPATH=src python benchmarks/trainer_throughput.py [options]   (JSON into benchmarks/results/)
"""

import sys

from elt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["trainer", *sys.argv[1:]]))
