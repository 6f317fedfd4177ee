"""Test-only torchrun worker: trains (and samples) the toy paradigm in several processes.

    torchrun --standalone --nproc_per_node 2 tests/dist_worker.py RUN_DIR [--resume-at K]
        [--sample-ckpt CKPT --sample-out DIR] key=value ...

Also a task module itself (``paradigm=toy_det``): the toy paradigm without input noise, so a step's
loss depends only on which items are in the global batch, not on which rank drew the noise. That
makes a 1-process and a 2-process run comparable step by step."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import toy_task  # noqa: E402
from elt.core.ilsd import ilsd_loss  # noqa: E402

SEEN = {
    "target": set(),
    "loss": set(),
}  # dtypes of the regression target and of the loss, as the loss sees them


class NoiselessToy(toy_task.ToyGenerator):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.built_on = next(self.backbone.parameters()).device.type  # "meta" when FSDP defers it

    def training_loss(self, batch, student_loops, lam):
        images, labels = batch
        out = self.backbone(
            self._tokens(labels, torch.zeros_like(images)),
            exit_loops=[student_loops] if student_loops else [],
        )
        teacher = self._image(out.final)
        student = self._image(out.exits[student_loops]) if student_loops else None

        def ground_truth(prediction):
            SEEN["target"].add(str(images.dtype))
            loss = (prediction - images).pow(2).mean()
            SEEN["loss"].add(str(loss.dtype))
            return loss

        return ilsd_loss(
            teacher, student, ground_truth, lambda s, t: (s - t).pow(2).mean(), lam, student_loops
        )


def build_generator(cfg):
    return NoiselessToy(cfg)


prepare_data = toy_task.prepare_data


def fsdp_units(model) -> list[str]:
    from torch.distributed.fsdp import FSDPModule

    return [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]


def register() -> None:
    from elt import registry

    registry.register_paradigm("toy", "toy_task")
    registry.register_paradigm("toy_det", "dist_worker")


def run_job(args, env) -> None:
    """One training run (and optional sharded sampling) in the current process group."""
    import dist_worker  # the paradigm's module (this file runs as __main__)
    from elt.cli import main as cli_main
    from elt.config import load_config
    from elt.train.distributed import is_sharded
    from elt.train.trainer import Trainer

    seen = dist_worker.SEEN
    for dtypes in seen.values():
        dtypes.clear()
    cfg = load_config(None, [*args.overrides, f"train.out_dir={args.run_dir}"])
    first = Trainer(cfg, progress=False, env=env)
    init = {
        "built_on": getattr(first.generator, "built_on", None),
        "ema_shadow": first.ema.shadow is not None,
        "ema_local": sum(
            (v.to_local() if is_sharded(v) else v).numel() for v in first.ema.averages().values()
        ),
        "ema_full": sum(v.numel() for v in first.ema.averages().values()),
        "ema_sharded": all(is_sharded(v) for v in first.ema.averages().values()),
    }
    if args.dump_init:
        from elt.train.dcp import stream_safetensors

        for name, state in (
            ("model", first.generator.state_dict()),
            ("ema", first.ema.averages()),
        ):
            target = Path(args.dump_init, f"{name}.safetensors") if env.is_main else None
            assert stream_safetensors(target, state) is None
    if args.resume_at:
        first.fit(until=args.resume_at)
        trainer = Trainer(cfg, progress=False, env=env)
        trainer.resume_from(args.run_dir)
    else:
        trainer = first
    trainer.fit()
    seeds = {
        "rank": env.rank,
        "world_size": env.world_size,
        "initial_seed": torch.initial_seed(),
        "per_rank_batch": trainer.per_rank_batch,
        "sharded": any(is_sharded(p) for p in trainer.generator.parameters()),
        "resumed_from": trainer.resumed_from and trainer.resumed_from.name,
        "fsdp_units": fsdp_units(trainer.model),
        "accum": trainer.accum,
        "init": init,
        "checkpoint_format": getattr(trainer, "checkpoint_format", None),
        "target_dtypes": sorted(seen["target"]),
        "loss_dtypes": sorted(seen["loss"]),
    }
    Path(args.run_dir, f"rank{env.rank}.json").write_text(json.dumps(seeds))
    if args.sample_ckpt:  # `elt sample` under torchrun: sharded over the ranks
        status = cli_main(
            [
                "sample",
                "--ckpt",
                args.sample_ckpt,
                "--loops",
                "1,3",
                "--num",
                "10",
                "--out",
                args.sample_out,
                "--batch-size",
                "3",
                "--no-progress",
            ]
        )
        assert status == 0, status


def parse_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument(
        "--resume-at", type=int, default=0, help="train to this step, then resume in a new Trainer"
    )
    parser.add_argument("--sample-ckpt")
    parser.add_argument("--sample-out")
    parser.add_argument(
        "--dump-init", help="write the initial (gathered) weights and EMA here, before training"
    )
    parser.add_argument(
        "--jobs",
        help="a JSON file: a list of argument lists (each this command line without --jobs, or "
        '["--eval", CKPT, OUT] for eval_worker), run one after another in one process group, '
        "so several runs share one launch (one torch import per rank)",
    )
    parser.add_argument("overrides", nargs="*")
    return parser.parse_intermixed_args(argv)


def main() -> None:
    args = parse_args()
    register()
    from elt.train.distributed import barrier, distributed_session

    if args.jobs:
        jobs = json.loads(Path(args.jobs).read_text())
        device = "cpu"
    else:
        jobs, device = [None], "auto"
        from elt.config import load_config

        device = load_config(None, [*args.overrides, f"train.out_dir={args.run_dir}"]).train.device
    with distributed_session(device) as env:
        for job in jobs:
            if job is not None and job[0] == "--eval":
                import eval_worker

                eval_worker.evaluate(job[1], job[2])
            else:
                run_job(args if job is None else parse_args(job), env)
            barrier(env)
    if os.environ.get("RANK", "0") == "0":
        print("worker done", flush=True)


if __name__ == "__main__":
    main()
