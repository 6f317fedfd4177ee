"""Run logging: ``RUN/log.jsonl`` always, TensorBoard (``RUN/tensorboard``) and Weights & Biases
when asked.

Only rank 0 logs. A record is one flat dict of numbers per logged step: loss parts (``teacher_gt``,
``student_gt``, ``distill``), ``lambda``, ``student_loops`` (L_int), ``lr``, ``grad_norm``,
throughput (``samples_per_s``, ``tokens_per_s``), ``mfu`` and memory. On resume from step s, records
after s (from the interrupted run, past its last checkpoint) are dropped from the JSONL and purged
from TensorBoard, so a resumed curve has no duplicate steps; a partial last line (a run killed
mid-write) is dropped. A fresh start (step 0) in a directory that already has a ``log.jsonl`` never
appends to it: the old log is kept as ``log.1.jsonl`` (``log.2.jsonl``, ... for earlier ones) and a
new one begins. TensorBoard event files of the earlier run stay in ``RUN/tensorboard``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from elt.fileio import open_no_follow, output_error, refuse_symlink, write_text


class RunLogger:
    def __init__(
        self,
        run_dir: str | Path,
        cfg: DictConfig,
        enabled: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "log.jsonl"
        self._file = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        refuse_symlink(
            self.path, "run log"
        )  # a planted link is never read, renamed or written through
        if resume_step is not None:
            self._truncate_after(resume_step)
        else:
            self._rotate()
        self._file = open_no_follow(self.path, "a", "run log")
        if cfg.logging.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except (
                ImportError
            ):  # the core install has no tensorboard: log.jsonl only, no warning on every run
                pass
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step)
        if cfg.logging.wandb:
            self._wandb = _start_wandb(self.run_dir, cfg)

    def _rotate(self) -> None:
        """Keep an earlier run's log as ``log.N.jsonl`` (N = 1 for the newest) instead of appending
        to it."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        number = 1
        while self.path.with_name(f"log.{number}.jsonl").exists():
            number += 1
        for index in range(number, 1, -1):  # shift older ones up: log.1 is always the previous run
            self.path.with_name(f"log.{index - 1}.jsonl").rename(
                self.path.with_name(f"log.{index}.jsonl")
            )
        self.path.rename(self.path.with_name("log.1.jsonl"))
        print(
            f"elt: warning: {self.run_dir} already had a log.jsonl (a run started from step 0 "
            "before); kept "
            "it as log.1.jsonl",
            file=sys.stderr,
        )

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # a partial line of a killed run
                dropped += 1
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        if dropped:
            print(
                f"elt: warning: dropped {dropped} unreadable line(s) of {self.path} (a partial "
                "write of an "
                "interrupted run)",
                file=sys.stderr,
            )
        write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        step = int(record["step"])
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except (
            OSError
        ) as exc:  # disk full: one line naming the log (the checkpoints are unaffected)
            raise output_error(self.path, exc) from exc
        numbers = {
            k: v for k, v in record.items() if isinstance(v, int | float) and v == v and k != "step"
        }
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(_tb_tag(key), value, step)
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_TB_GROUPS = {
    "loss": "loss",
    "teacher_gt": "loss",
    "student_gt": "loss",
    "distill": "loss",
    "lambda": "ilsd",
    "student_loops": "ilsd",
    "samples_per_s": "perf",
    "tokens_per_s": "perf",
    "mfu": "perf",
    "step_s": "perf",
}


def _tb_tag(key: str) -> str:
    group = _TB_GROUPS.get(key, "mem" if key.startswith(("mem_", "rss_")) else "train")
    return f"{group}/{key}"


def _start_wandb(run_dir: Path, cfg: DictConfig):
    """W&B is optional: asked for but not installed → a warning, not an error. The run id is kept in
    the run directory so a resumed run continues the same W&B run."""
    try:
        import wandb
    except ImportError:
        print(
            "elt: warning: logging.wandb=true but wandb is not installed (pip install wandb); "
            "skipping W&B",
            file=sys.stderr,
        )
        return None
    id_file = run_dir / "wandb_id"
    refuse_symlink(id_file, "W&B id file")
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    write_text(id_file, run_id)
    return wandb.init(
        project=cfg.logging.wandb_project,
        dir=str(run_dir),
        id=run_id,
        resume="allow",
        name=run_dir.name,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
