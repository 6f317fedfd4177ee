"""Test-only torchrun worker: ``elt eval`` of a toy checkpoint with the toy metric suite, sharded
over ranks.

torchrun --standalone --nproc_per_node 2 tests/eval_worker.py CKPT OUT
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def evaluate(ckpt: str, out: str) -> None:
    import dist_worker
    import elt.eval.run
    from test_eval_sweep import toy_suite

    dist_worker.register()
    elt.eval.run.build_suite = lambda request: toy_suite()
    from elt.cli import main as cli_main

    code = cli_main(
        [
            "eval",
            "--ckpt",
            ckpt,
            "--loops",
            "1,3",
            "--num",
            "24",
            "--out",
            out,
            "--batch-size",
            "5",
            "--no-progress",
            "--no-latency",
        ]
    )
    assert code == 0, code


def main() -> None:
    evaluate(sys.argv[1], sys.argv[2])


if __name__ == "__main__":
    main()
