"""Hostile files and lost data (issue 33), one table per class:

- DATA_LOSS: a run's checkpoints are never replaced by another run, commands that write into a run
  directory take its lock, nothing is written into the installed package, damaged checkpoints are
  named;
- DISK_FULL: a file-size limit (``RLIMIT_FSIZE`` in a subprocess) while checkpointing, exporting or
  saving a tokenizer is one line, leaves no temporary folder and keeps the previous checkpoint;
- PLANTED: symbolic links planted in a run (lock, log, step folders, checkpoint files, temporary
  names) are never followed, environment variables are never resolved into a saved config;
- MALFORMED: damaged or foreign input files (object-array ``.npz``, pickles as weights, garbage I3D
  weights, image folders whose every file is corrupt) are one line, never a traceback.

Each case builds its inputs in a fresh folder, snapshots every file below the test's folder (content
hashes, link targets) and the shared toy run, runs ``elt ...`` and checks: the exit status, exactly
the expected number of stderr lines (one for an error) without "Traceback" or the planted secret,
the expected words, no new or changed file (refusals), and a bound on the wall time."""

import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TOY_OVERRIDES
from elt.cli import main

TESTS = Path(__file__).resolve().parent
SECRET = "hunter2-secret-value"
WALL_LIMIT_S = (
    60  # per case: generous for a loaded CI machine; every refusal here takes a few seconds at most
)
PACKAGE_DIR = Path(__import__("elt").__file__).resolve().parent
_HELD: list = []  # lock handles held by a case (released after it)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 4-step toy run with checkpoints step_0000002 and step_0000004."""
    from elt import registry
    from elt.config import load_config
    from elt.train.trainer import train

    registry.register_paradigm("toy", "toy_task")
    run = tmp_path_factory.mktemp("hostile") / "run"
    train(
        load_config(
            None,
            [
                *TOY_OVERRIDES,
                "train.steps=4",
                "checkpoint.every=2",
                "logging.tensorboard=false",
                f"train.out_dir={run}",
            ],
        ),
        progress=False,
    )
    return run


def tree(root: Path) -> dict[str, str]:
    """Every entry below ``root`` (links not followed) with its content hash, link target or
    'dir'."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# -- inputs ----------------------------------------------------------------------------------------
def copy_run(toy_run: Path, where: Path, name: str = "run") -> Path:
    run = where / name
    shutil.copytree(toy_run, run, symlinks=True)
    return run


def checkpoint_copy(toy_run: Path, where: Path, name: str = "ckpt") -> Path:
    """A copy of step_0000004 without its manifest (files are then checked by loading them)."""
    ckpt = where / name
    shutil.copytree(toy_run / "checkpoints" / "step_0000004", ckpt)
    (ckpt / "manifest.json").unlink()
    return ckpt


def train_args(where: Path, *overrides: str) -> list[str]:
    yaml = where / "toy.yaml"
    yaml.write_text("paradigm: toy\n")
    return [
        "train",
        str(yaml),
        "--no-progress",
        *TOY_OVERRIDES,
        "logging.tensorboard=false",
        *overrides,
    ]


def other_run(toy_run: Path, where: Path) -> Path:
    """A copy of the toy run as if another run had written it (another run id in its manifests)."""
    run = copy_run(toy_run, where, "other")
    for manifest in (run / "checkpoints").glob("step_*/manifest.json"):
        manifest.write_text(
            json.dumps({**json.loads(manifest.read_text()), "run": "0123456789abcdef"})
        )
    return run


def hold_lock(run: Path) -> None:
    """Hold ``RUN/.lock`` as a training does (another open file description: a conflict even
    in-process)."""
    handle = open(run / ".lock", "a+")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(json.dumps({"pid": 1, "host": "elsewhere", "started": "now"}) + "\n")
    handle.flush()
    _HELD.append(handle)


def locked_run(toy_run: Path, where: Path) -> Path:
    run = copy_run(toy_run, where)
    hold_lock(run)
    return run


def damaged_newest(toy_run: Path, where: Path) -> Path:
    run = copy_run(toy_run, where)
    weights = run / "checkpoints" / "step_0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return run


def damaged_state(toy_run: Path, where: Path) -> Path:
    ckpt = checkpoint_copy(toy_run, where)
    (ckpt / "state.pt").write_bytes((ckpt / "state.pt").read_bytes()[:3000])
    return ckpt


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def image_folder(where: Path, name: str, corrupt: bool) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = where / name / "train" / label
        folder.mkdir(parents=True)
        for index in range(8):
            if corrupt:
                (folder / f"{index}.png").write_bytes(
                    b"not a png" + bytes(rng.integers(0, 255, 64, dtype=np.uint8))
                )
            else:
                # data.image_size's default: no resizing warning (elt.data.shape)
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                    folder / f"{index}.png"
                )
    return where / name


FOLDER_TOKENIZER = [
    "data.name=folder",
    "data.channels=1",
    "data.num_classes=2",
    "tokenizer.steps=2",
    "tokenizer.eval_items=0",
    "tokenizer.batch_size=8",
    "--no-progress",
]


def object_npz(where: Path, name: str, count: int = 8) -> Path:
    path = where / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, np.array([{"a": 1}] * count, dtype=object), np.arange(count) % 4)
    return path


def video_npz(where: Path, name: str) -> Path:
    path = where / name
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(path, rng.integers(0, 255, (8, 4, 32, 32, 1), dtype=np.uint8), np.arange(8) % 4)
    return path


def pickle_weights(where: Path, name: str = "weights.safetensors") -> Path:
    path = where / name
    torch.save({"x": torch.zeros(3)}, path)
    return path


def linked(where: Path, outside: Path, target_name: str, data: bytes | str, link: Path) -> Path:
    """Write ``data`` to ``outside/target_name`` and make ``link`` point to it."""
    target = outside / target_name
    target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    return link


# -- the contract ----------------------------------------------------------------------------------
def run_case(case, toy_run, tmp_path, capsys, monkeypatch):
    """Run one table row: (id, build(toy_run, where, outside) -> argv, status, expected words,
    lines, check)."""
    name, build, status, expected, lines, check = case
    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    monkeypatch.setenv("ELT_TEST_SECRET", SECRET)
    where, outside = tmp_path / "case", tmp_path / "outside"
    where.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text(f"{SECRET}\n")
    monkeypatch.chdir(where)
    try:
        argv = build(toy_run, where, outside)
        before, run_before = tree(tmp_path), tree(toy_run)
        capsys.readouterr()
        start = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        seconds = time.perf_counter() - start
    finally:
        while _HELD:
            _HELD.pop().close()
    out, err = capsys.readouterr()
    assert code == status, err
    assert "Traceback" not in err and SECRET not in err and SECRET not in out, err
    assert len(err.strip().splitlines()) == lines, err
    for word in expected:
        assert word in err, err
    assert seconds < WALL_LIMIT_S, f"{name} took {seconds:.1f} s"
    assert tree(toy_run) == run_before, "the shared run changed"
    assert (outside / "victim.txt").read_text() == f"{SECRET}\n", "written through a planted link"
    if status != 0:
        assert tree(tmp_path) == before, "files were written or changed"
    if check is not None:
        check(where, outside, out, err)


def unchanged(where, outside, out, err):  # a command that only reads
    pass


# == class 1: data that can be lost or silently replaced
# ======================================================
def in_package(toy_run, where, outside):
    return ["export", "--ckpt", str(toy_run), "--out", str(PACKAGE_DIR / "_hostile_test_out")]


def stale_temp(toy_run, where, outside):
    out = where / "o"
    out.mkdir()
    (out / f".samples_L1.npz.tmp-{dead_pid()}").write_bytes(b"half")
    return [
        "sample",
        "--ckpt",
        str(toy_run),
        "--out",
        str(out),
        "--loops",
        "1",
        "--num",
        "2",
        "--no-progress",
    ]


def no_stale_temp(where, outside, out, err):
    assert sorted(p.name for p in (where / "o").iterdir()) == [
        "grid.png",
        "samples.json",
        "samples_L1.npz",
    ]


def newest_used(expected_step):
    def check(where, outside, out, err):
        assert "step_0000004" in err and expected_step in err and "damaged" in err
        if out.strip().startswith("{"):
            assert json.loads(out)["checkpoint"].endswith(expected_step)

    return check


DATA_LOSS = [
    (
        "fresh-run-over-a-finished-run",
        lambda r, w, o: train_args(w, "train.steps=2", f"train.out_dir={copy_run(r, w)}"),
        2,
        ["--resume auto", "train.out_dir", "step_0000004"],
        1,
        None,
    ),
    (
        "fresh-run-of-another-width",
        lambda r, w, o: train_args(
            w, "train.steps=2", "model.width=64", f"train.out_dir={copy_run(r, w)}"
        ),
        2,
        ["--resume auto"],
        1,
        None,
    ),
    (
        "fresh-run-over-a-damaged-run",
        lambda r, w, o: train_args(w, "train.steps=2", f"train.out_dir={damaged_newest(r, w)}"),
        2,
        ["--resume auto"],
        1,
        None,
    ),
    (
        "tokenizer-train-into-a-locked-run",
        lambda r, w, o: [
            "tokenizer",
            "train",
            "fmnist_masked",
            f"train.out_dir={locked_run(r, w)}",
            f"data.root={image_folder(w, 'imgs', False)}",
            *FOLDER_TOKENIZER,
        ],
        2,
        ["in use"],
        1,
        None,
    ),
    (
        "calibrate-into-a-locked-run",
        lambda r, w, o: [
            "calibrate",
            "--ckpt",
            str(locked_run(r, w)),
            "--loops",
            "1",
            "--num",
            "4",
            "--no-latency",
            "--no-progress",
        ],
        2,
        ["in use"],
        1,
        None,
    ),
    (
        "sample-into-a-locked-run",
        lambda r, w, o: [
            "sample",
            "--ckpt",
            str(r),
            "--out",
            str(locked_run(r, w) / "more"),
            "--loops",
            "1",
            "--num",
            "2",
        ],
        2,
        ["in use"],
        1,
        None,
    ),
    ("export-into-the-package", in_package, 2, ["installed elt package"], 1, None),
    (
        "sample-into-the-package",
        lambda r, w, o: [
            "sample",
            "--ckpt",
            str(r),
            "--out",
            str(PACKAGE_DIR / "_hostile_test_out"),
            "--num",
            "2",
        ],
        2,
        ["installed elt package"],
        1,
        None,
    ),
    (
        "resume-another-runs-checkpoint-over-this-run",
        lambda r, w, o: [
            *train_args(
                w, "train.steps=4", "checkpoint.every=2", f"train.out_dir={copy_run(r, w)}"
            ),
            "--resume",
            str(other_run(r, w) / "checkpoints" / "step_0000002"),
        ],
        2,
        ["another run", "train.out_dir"],
        1,
        None,
    ),
    (
        "info-checks-the-training-state",
        lambda r, w, o: ["info", str(damaged_state(r, w))],
        2,
        ["state.pt"],
        1,
        None,
    ),
    (
        "info-names-a-damaged-newest-step",
        lambda r, w, o: ["info", str(damaged_newest(r, w))],
        0,
        ["warning"],
        1,
        newest_used("step_0000002"),
    ),
    (
        "sample-names-a-damaged-newest-step",
        lambda r, w, o: [
            "sample",
            "--ckpt",
            str(damaged_newest(r, w)),
            "--out",
            str(w / "o"),
            "--loops",
            "1",
            "--num",
            "2",
            "--no-progress",
        ],
        0,
        ["warning"],
        1,
        newest_used("step_0000002"),
    ),
    ("sample-cleans-a-killed-runs-temporary", stale_temp, 0, [], 0, no_stale_temp),
]


@pytest.mark.parametrize("case", DATA_LOSS, ids=[c[0] for c in DATA_LOSS])
def test_data_loss(case, toy_run, tmp_path, capsys, monkeypatch):
    try:
        run_case(case, toy_run, tmp_path, capsys, monkeypatch)
    finally:
        shutil.rmtree(PACKAGE_DIR / "_hostile_test_out", ignore_errors=True)
    assert not (PACKAGE_DIR / "_hostile_test_out").exists()


def test_checkpoint_writer_never_replaces_another_runs_step(toy_run, tmp_path):
    """The second line of defence: save_checkpoint itself refuses a step folder written by another
    run, and re-saves a step of its own run (or of the run it resumed)."""
    from elt.config import load_config
    from elt.errors import CheckpointError
    from elt.train import checkpoint as ckpt_lib

    __import__("elt.registry", fromlist=["x"]).register_paradigm("toy", "toy_task")
    run = copy_run(toy_run, tmp_path)
    before = tree(run / "checkpoints")
    cfg = load_config(None, [*TOY_OVERRIDES, "model.width=64", f"train.out_dir={run}"])
    ckpt_lib.start_run(run)  # a new run in that folder
    weights = {"w": torch.ones(2)}
    with pytest.raises(CheckpointError, match="another run"):
        ckpt_lib.save_checkpoint(run, 4, cfg, weights, weights, {})
    assert tree(run / "checkpoints") == before
    ckpt_lib.continue_run(
        run, run / "checkpoints" / "step_0000002"
    )  # resumed from its step 2: may redo step 4
    saved = ckpt_lib.save_checkpoint(run, 4, cfg, weights, weights, {})
    assert (
        ckpt_lib.run_id_of(saved) == ckpt_lib.run_id_of(run / "checkpoints" / "step_0000002") != ""
    )
    assert (run / "checkpoints" / "latest").read_text() == "step_0000004"


def test_calibrate_of_a_shipped_model_writes_under_the_current_directory(tmp_path, monkeypatch):
    from elt.eval.calibrate import output_dir
    from elt.inference.demo_models import demo_models

    if "masked" not in demo_models():
        pytest.skip("no shipped demo:masked in this install")
    monkeypatch.chdir(tmp_path)
    out, note = output_dir("demo:masked", None)
    assert not out.resolve().is_relative_to(PACKAGE_DIR) and out.resolve().parent == tmp_path
    assert str(out.resolve()) in note
    assert list(tmp_path.iterdir()) == []  # nothing written before the work


def test_atomic_writers_refuse_the_package_directory(tmp_path):
    from elt.fileio import OutputError, atomic_dir, exclusive_lock, write_text

    target = PACKAGE_DIR / "assets" / "_hostile_test.txt"
    for attempt in (
        lambda: write_text(target, "x"),
        lambda: atomic_dir(target).__enter__(),
        lambda: exclusive_lock(PACKAGE_DIR / "_hostile_test_dir").__enter__(),
    ):
        with pytest.raises(OutputError, match="installed elt package"):
            attempt()
    assert not target.exists() and not (PACKAGE_DIR / "_hostile_test_dir").exists()


# == class 2: disk full / file-size limit
# ======================================================================
RUNNER = (
    "import sys; sys.path.insert(0, {tests!r}); from elt import registry; "
    "registry.register_paradigm('toy', 'toy_task'); from elt.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def limited(argv: list[str], limit_bytes: int, cwd: Path) -> subprocess.CompletedProcess:
    """``elt ARGV`` in a subprocess whose files may not grow past ``limit_bytes`` (``ulimit
    -f``)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", RUNNER.format(tests=str(TESTS)), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=WALL_LIMIT_S * 2,
        preexec_fn=limit,
    )


def no_temporaries(root: Path) -> list[str]:
    return [k for k in tree(root) if ".tmp" in k or ".old" in k or "dcp_step" in k]


# (id, build(toy_run, where) -> argv, byte limit, check(where) after the refusal)
def checkpoints_kept(where):
    from elt.inference.checkpoints import is_complete, resolve_checkpoint

    run = where / "run"
    assert resolve_checkpoint(run).name == "step_0000004" and is_complete(
        run / "checkpoints" / "step_0000004"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest",
        "step_0000002",
        "step_0000004",
    ]


def nothing_under(name):
    def check(where):
        assert not (where / name).exists() or not any((where / name).iterdir())

    return check


DISK_FULL = [
    (
        "checkpoint-of-a-fresh-run",
        lambda r, w: train_args(w, "train.steps=2", f"train.out_dir={w / 'new'}"),
        60_000,
        nothing_under("new/checkpoints"),
    ),
    (
        "checkpoint-of-a-resumed-run",
        lambda r, w: [
            *train_args(
                w, "train.steps=6", "checkpoint.every=2", f"train.out_dir={copy_run(r, w)}"
            ),
            "--resume",
            "auto",
        ],
        60_000,
        checkpoints_kept,
    ),
    (
        "export",
        lambda r, w: ["export", "--ckpt", str(r), "--out", str(w / "exported"), "--fp32"],
        60_000,
        nothing_under("exported"),
    ),
    (
        "tokenizer-train",
        lambda r, w: [
            "tokenizer",
            "train",
            "fmnist_masked",
            f"data.root={image_folder(w, 'i', False)}",
            *FOLDER_TOKENIZER,
            "--out",
            str(w / "tok"),
        ],
        100_000,
        nothing_under("tok"),
    ),
]


@pytest.mark.parametrize("case", DISK_FULL, ids=[c[0] for c in DISK_FULL])
def test_disk_full(case, toy_run, tmp_path):
    name, build, limit_bytes, check = case
    where = tmp_path / "case"
    where.mkdir()
    argv = build(toy_run, where)
    start = time.perf_counter()
    result = limited(argv, limit_bytes, where)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    # one error line, last (a resumed run announces itself first)
    assert (
        "Traceback" not in result.stderr
        and [line for line in lines if "error" in line] == lines[-1:]
    ), result.stderr
    assert all(line.startswith("elt: ") for line in lines), result.stderr
    assert "file-size limit" in lines[-1] or "no space left" in lines[-1], lines[-1]
    assert no_temporaries(where) == []
    check(where)
    assert seconds < WALL_LIMIT_S * 2, f"{name} took {seconds:.1f} s"


# == class 3: files an attacker can plant
# =====================================================================
def planted_lock(toy_run, where, outside):
    run = copy_run(toy_run, where)
    linked(where, outside, "victim.txt", f"{SECRET}\n", run / ".lock")
    return [*train_args(where, "train.steps=6", f"train.out_dir={run}"), "--resume", "auto"]


def planted_log(toy_run, where, outside):
    run = copy_run(toy_run, where)
    linked(where, outside, "victim.txt", f"{SECRET}\n", run / "log.jsonl")
    return [*train_args(where, "train.steps=6", f"train.out_dir={run}"), "--resume", "auto"]


def planted_step_folder(toy_run, where, outside):
    run = where / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(toy_run / "checkpoints" / "step_0000004", outside / "elsewhere")
    (run / "checkpoints" / "step_0000009").symlink_to(outside / "elsewhere")
    return ["sample", "--ckpt", str(run), "--out", str(where / "o"), "--num", "2"]


def planted_config(toy_run, where, outside):
    ckpt = checkpoint_copy(toy_run, where)
    linked(where, outside, "secret.yaml", f"paradigm: {SECRET}\n", ckpt / "config.yaml")
    return ["sample", "--ckpt", str(ckpt), "--out", str(where / "o"), "--num", "2"]


def planted_weights(toy_run, where, outside):
    ckpt = copy_run(toy_run, where) / "checkpoints" / "step_0000004"
    data = (ckpt / "ema.safetensors").read_bytes()
    linked(where, outside, "weights.safetensors", data, ckpt / "ema.safetensors")
    return ["info", str(ckpt)]


def planted_state(toy_run, where, outside):
    ckpt = checkpoint_copy(toy_run, where)
    linked(where, outside, "state.pt", (ckpt / "state.pt").read_bytes(), ckpt / "state.pt")
    return [
        *train_args(where, "train.steps=6", f"train.out_dir={where / 'new'}"),
        "--resume",
        str(ckpt),
    ]


def planted_temporary(toy_run, where, outside):
    out = where / "o"
    out.mkdir()
    (out / f".samples_L1.npz.tmp-{os.getpid()}").symlink_to(outside / "victim.txt")
    return [
        "sample",
        "--ckpt",
        str(toy_run),
        "--out",
        str(out),
        "--loops",
        "1",
        "--num",
        "2",
        "--no-progress",
    ]


def samples_are_files(where, outside, out, err):
    assert (where / "o" / "samples_L1.npz").is_file() and not (
        where / "o" / "samples_L1.npz"
    ).is_symlink()
    assert np.load(where / "o" / "samples_L1.npz")["arr_0"].shape[0] == 2


PLANTED = [
    ("run-lock-is-a-link", planted_lock, 2, ["symbolic link", ".lock"], 1, None),
    ("run-log-is-a-link", planted_log, 2, ["symbolic link", "log.jsonl"], 1, None),
    ("step-folder-is-a-link", planted_step_folder, 2, ["symbolic link", "step_0000009"], 1, None),
    ("checkpoint-config-is-a-link", planted_config, 2, ["symbolic link", "config.yaml"], 1, None),
    (
        "checkpoint-weights-are-a-link",
        planted_weights,
        2,
        ["symbolic link", "ema.safetensors"],
        1,
        None,
    ),
    ("training-state-is-a-link", planted_state, 2, ["symbolic link", "state.pt"], 1, None),
    ("temporary-name-is-a-link", planted_temporary, 0, [], 0, samples_are_files),
    (
        "config-reads-the-environment",
        lambda r, w, o: train_args(
            w,
            "train.steps=1",
            "logging.wandb_project=${oc.env:ELT_TEST_SECRET}",
            f"train.out_dir={w / 'new'}",
        ),
        2,
        ["logging.wandb_project", "environment"],
        1,
        None,
    ),
    (
        "tokenizer-config-reads-the-environment",
        lambda r, w, o: [
            "tokenizer",
            "train",
            "fmnist_masked",
            "data.root=${oc.env:ELT_TEST_SECRET}",
            *FOLDER_TOKENIZER,
            "--out",
            str(w / "t"),
        ],
        2,
        ["data.root", "environment"],
        1,
        None,
    ),
    (
        "nested-config-reads-the-environment",
        lambda r, w, o: train_args(
            w,
            "train.steps=1",
            "data.root=/x/${oc.env:ELT_TEST_SECRET}",
            f"train.out_dir={w / 'new'}",
        ),
        2,
        ["data.root", "environment"],
        1,
        None,
    ),
]


@pytest.mark.parametrize("case", PLANTED, ids=[c[0] for c in PLANTED])
def test_planted_files(case, toy_run, tmp_path, capsys, monkeypatch):
    run_case(case, toy_run, tmp_path, capsys, monkeypatch)


def test_lock_symlink_is_not_followed_by_the_lock_helper(tmp_path):
    from elt.fileio import OutputError, exclusive_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        with exclusive_lock(tmp_path / "run"):
            pass
    assert victim.read_text() == "keep"


# == class 4: malformed input files
# ============================================================================
def video_samples(where: Path, bad: bool = False) -> Path:
    folder = where / "samples"
    object_npz(folder, "samples_L1.npz") if bad else video_npz(folder, "samples_L1.npz")
    return folder


def pickled_tokenizer(toy_run, where, outside):
    folder = where / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps({"architecture": {}, "hash": "0"}))
    pickle_weights(folder, "tokenizer.safetensors")
    return [
        "tokenizer",
        "train",
        "fmnist_masked",
        f"data.root={image_folder(where, 'i', False)}",
        f"tokenizer.path={folder}",
        "--force",
        *FOLDER_TOKENIZER,
    ]


def pickled_tokenizer_train(toy_run, where, outside):
    """A training that loads a saved tokenizer whose weights are a pickle."""
    from elt.config import load_config
    from elt.tokenizers.factory import build_trainable_tokenizer
    from elt.tokenizers.fsq import save_tokenizer

    cfg = load_config("fmnist_masked", ["data.channels=1"])
    folder = where / "tok"
    save_tokenizer(build_trainable_tokenizer(cfg), folder)
    pickle_weights(folder, "tokenizer.safetensors")
    return [
        "train",
        "fmnist_masked",
        "--no-progress",
        "model.width=32",
        "model.heads=2",
        "train.steps=1",
        "data.name=folder",
        "data.num_classes=2",
        "data.channels=1",
        f"data.root={image_folder(where, 'i', False)}",
        f"tokenizer.path={folder}",
        f"train.out_dir={where / 'r'}",
    ]


MALFORMED = [
    (
        "eval-video-real-is-an-object-npz",
        lambda r, w, o: [
            "eval",
            "video",
            "--samples",
            str(video_samples(w)),
            "--real",
            str(object_npz(w, "real.npz")),
            "--no-classifier",
            "--out",
            str(w / "e"),
        ],
        2,
        ["object arrays", "real.npz"],
        1,
        None,
    ),
    (
        "eval-video-samples-are-an-object-npz",
        lambda r, w, o: [
            "eval",
            "video",
            "--samples",
            str(video_samples(w, bad=True)),
            "--real",
            str(video_npz(w, "real.npz")),
            "--no-classifier",
            "--out",
            str(w / "e"),
        ],
        2,
        ["object arrays", "samples_L1.npz"],
        1,
        None,
    ),
    (
        "eval-video-real-is-not-an-npz",
        lambda r, w, o: [
            "eval",
            "video",
            "--samples",
            str(video_samples(w)),
            "--real",
            str(pickle_weights(w, "real.npz")),
            "--no-classifier",
            "--out",
            str(w / "e"),
        ],
        2,
        ["real.npz"],
        1,
        None,
    ),
    (
        "eval-samples-are-an-object-npz",
        lambda r, w, o: [
            "eval",
            "--samples",
            str(object_npz(w / "s", "samples_L1.npz").parent),
            "--ckpt",
            str(r),
            "--loops",
            "1",
            "--num",
            "8",
            "--out",
            str(w / "e"),
        ],
        2,
        ["object arrays"],
        1,
        None,
    ),
    (
        "eval-video-classifier-is-a-pickle",
        lambda r, w, o: [
            "eval",
            "video",
            "--samples",
            str(video_samples(w)),
            "--real",
            str(video_npz(w, "real.npz")),
            "--classifier",
            str(pickle_weights(w)),
            "--out",
            str(w / "e"),
        ],
        2,
        ["classifier weights", "pickle"],
        1,
        None,
    ),
    (
        "eval-floor-classifier-is-a-pickle",
        lambda r, w, o: ["eval", "floor", "--classifier", str(pickle_weights(w)), "--num", "8"],
        2,
        ["classifier weights"],
        1,
        None,
    ),
    (
        "eval-video-i3d-is-garbage",
        lambda r, w, o: [
            "eval",
            "video",
            "--samples",
            str(video_samples(w)),
            "--real",
            str(video_npz(w, "real.npz")),
            "--no-classifier",
            "--i3d",
            str(pickle_weights(w, "i3d.pt")),
            "--out",
            str(w / "e"),
        ],
        2,
        ["i3d.pt", "SHA-256"],
        1,
        None,
    ),
    (
        "tokenizer-weights-are-a-pickle",
        pickled_tokenizer_train,
        2,
        ["tokenizer weights", "pickle"],
        1,
        None,
    ),
    (
        "image-folder-all-corrupt",
        lambda r, w, o: [
            "tokenizer",
            "train",
            "fmnist_masked",
            f"data.root={image_folder(w, 'bad', True)}",
            *FOLDER_TOKENIZER,
            "--out",
            str(w / "t"),
        ],
        2,
        ["no readable image"],
        1,
        None,
    ),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_inputs(case, toy_run, tmp_path, capsys, monkeypatch):
    run_case(case, toy_run, tmp_path, capsys, monkeypatch)


def test_no_write_into_a_run_another_process_holds(toy_run, tmp_path):
    """Commands that do not take the lock themselves (eval, bench, ...) still never write into a run
    while a training holds it: every atomic write checks the lock of the run it lands in."""
    from elt.fileio import LockedError, write_json

    run = copy_run(toy_run, tmp_path)
    hold_lock(run)
    try:
        before = tree(run)
        with pytest.raises(LockedError, match="in use"):
            write_json(run / "eval" / "eval.json", {"x": 1})
        assert tree(run) == before
    finally:
        while _HELD:
            _HELD.pop().close()
    (run / ".lock").unlink()
    write_json(run / "eval.json", {"x": 1})  # once the training is over
    assert json.loads((run / "eval.json").read_text()) == {"x": 1}


def test_a_closed_pipe_on_stdout_is_no_traceback():
    """elt info RUN | head: the reader may be gone before elt writes; elt stops quietly (141,
    nothing on stderr)."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "elt.cli", "info", "demo:masked"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
