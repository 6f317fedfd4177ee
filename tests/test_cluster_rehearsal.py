"""The cluster rehearsal at CI size: 2 gloo processes (resume on 1) run the masked-video family (the
lightest) through tokenizer → ``elt prepare`` → training with grids → SIGTERM to the launcher (exit
143, a checkpoint) → resume on another process count → sharded sampling, under a 30 s process-group
timeout. The full rehearsal (4 processes, every family) is ``python
benchmarks/cluster_rehearsal.py``."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_rehearsal_masked_video_two_processes(tmp_path):
    pytest.importorskip("av")
    sys.path.insert(0, str(BENCH))
    try:
        import cluster_rehearsal
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "rehearsal.json"
    status = cluster_rehearsal.main(
        [
            "--smoke",
            "--families",
            "masked_video",
            "--steps",
            "8",
            "--stop-at",
            "3",
            "--num",
            "4",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    record = json.loads(out.read_text())
    family = record["families"][0]
    failed = [
        (p["phase"], p["returncode"], p.get("stderr_tail", "")[-800:])
        for p in family["phases"]
        if not p["ok"]
    ]
    assert status == 0 and record["all_pass"], failed
    phases = {p["phase"]: p for p in family["phases"]}
    assert phases["train_sigterm"]["returncode"] == 143 and 3 <= family["stopped_at_step"] < 8
    assert phases["resume"]["processes"] == 1 and family["checkpoints"][-1] == "step_0000008"
    assert family["grids"]  # grids drawn by both ranks and written by rank 0
    # every multi-process phase reported both ranks' collective waits and peak RSS
    for name in ("prepare", "train_sigterm", "sample"):
        assert sorted(r["rank"] for r in phases[name]["ranks"]) == [0, 1], name
        assert all(r["peak_rss_mb"] > 0 for r in phases[name]["ranks"])
    assert record["max_collective_wait_s"] < 30
    # the loss curve of 2 processes (then 1 after the resume) follows the 1-process run
    loss = family["loss"]
    assert None not in loss["cluster"] and None not in loss["reference_1proc"]
    assert loss["max_rel_diff_before_stop"] < 1e-4 and loss["max_rel_diff_after_resume"] < 1e-4
