"""scripts/slurm_train.sbatch: Slurm's ``--signal=B:TERM@300`` signals the batch shell only; the
script must forward it to the launcher's process group so that the workers checkpoint and the job
exits 143. Run here with bash as Slurm would run the batch script (no Slurm needed): 2 gloo workers,
SIGTERM to the batch shell alone."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TOY_OVERRIDES
from elt.inference.checkpoints import resolve_checkpoint

TESTS = Path(__file__).parent
ROOT = TESTS.parent
SCRIPT = ROOT / "scripts" / "slurm_train.sbatch"
SITE = """
import sys
sys.path.insert(0, {tests!r})
try:
    import dist_worker
    dist_worker.register()
except Exception:
    pass
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_to_the_batch_shell_reaches_the_workers(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        SITE.format(tests=str(TESTS))
    )  # the toy paradigm in every process
    config = tmp_path / "toy.yaml"
    config.write_text("paradigm: toy\n")
    run = tmp_path / "run"
    overrides = [
        *TOY_OVERRIDES,
        "data.limit=40",
        "train.threads=1",
        "logging.tensorboard=false",
        "logging.every=1",
        "train.steps=5000",
        "train.device=cpu",
        f"train.out_dir={run}",
        "distributed.timeout_s=60",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{ROOT / 'src'}",
        "OMP_NUM_THREADS": "1",
        "ELT_NPROC_PER_NODE": "2",
        "ELT_PYTHON": sys.executable,
        "MASTER_PORT": str(free_port()),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "60",
    }
    for key in [k for k in env if k.startswith("SLURM_")]:
        env.pop(key)
    # the batch shell in its own session, as slurmd starts it; the signal goes to that shell alone
    shell = subprocess.Popen(
        ["bash", str(SCRIPT), str(config), *overrides],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = run / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert shell.poll() is None, shell.communicate()[1]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    os.kill(shell.pid, signal.SIGTERM)  # Slurm's B:TERM: the batch shell, not its children
    try:
        out, err = shell.communicate(timeout=120)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == 143, err
    assert "forwarding it to the launcher's process group" in err
    stops = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stops) == 1, err
    checkpoint = resolve_checkpoint(run)
    assert checkpoint.name in stops[0] and int(checkpoint.name.split("_")[1]) >= 3
    assert "Traceback" not in err


def test_the_script_names_its_usage():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: sbatch scripts/slurm_train.sbatch CONFIG" in done.stderr
