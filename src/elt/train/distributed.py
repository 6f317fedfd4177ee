"""Multi-process training on PyTorch's own engine: ``torchrun`` starts the processes, this module
reads the environment it sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and wraps the model in DDP (default) or FSDP2 (``fully_shard``,
``distributed.strategy=fsdp``).

No process management of our own: a run started without torchrun is a single process, a run started
    by
torchrun is one process per device. See docs/distributed.md for the launch commands.

Global-batch semantics: ``train.batch_size`` is the batch of one optimizer step summed over all
ranks; each rank loads ``batch_size / world_size`` items. :class:`ShardedSampler` deals every rank
an interleaved slice of one global permutation, so the union of the ranks' batches at step s is
exactly the batch a single process would draw at step s — the loss curve does not depend on the
number of processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from elt.core.ilsd import ILSDTerms
from elt.runtime import init_process_group, resolve_device

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current_env(device_name: str = "auto") -> DistEnv:
    """The environment of this process, whether or not a process group is initialised yet."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return DistEnv(device=device)


@contextmanager
def distributed_session(
    device_name: str = "auto", timeout_s: float | None = None
) -> Iterator[DistEnv]:
    """Initialise the process group when launched by torchrun (NCCL on CUDA, gloo on CPU) and tear
    it down on exit; a no-op for a single process or when the caller already initialised a group.
    ``timeout_s``: how long any collective may wait (``distributed.timeout_s``;
    ``ELT_DIST_TIMEOUT_S`` overrides; default 600 s), so a rank that never arrives fails the run
    instead of hanging it."""
    created = False
    if launched_by_torchrun() and not dist.is_initialized():
        device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        init_process_group(device, timeout_s)
        created = True
    clean = False
    try:
        yield current_env(device_name)
        clean = True
    finally:
        if created and dist.is_initialized():
            if clean:
                # every rank leaves together: a gloo peer torn down while another rank still
                # holds its connection can abort that rank at exit (SIGABRT in gloo's thread)
                dist.barrier()
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Per-rank seed for the global RNGs (noise, masks, dropout): rank 0 keeps ``seed``."""
    return seed + 1_000_003 * rank


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


SHARED_TOKEN = ".elt_shared_fs_check"


def check_shared_paths(env: DistEnv, paths: dict[str, Any]) -> None:
    """Multi-process runs need every rank to see the same run directory and cache folders (a shared
    filesystem across nodes). Rank 0 writes a fresh token into each folder; every rank reads it
    back. A rank that cannot fails the run with one line naming the folder and the host (on every
    rank, so nobody hangs)."""
    if not env.enabled:
        return
    import socket
    import uuid
    from pathlib import Path

    from elt.errors import UserError
    from elt.fileio import write_text

    token = uuid.uuid4().hex if env.is_main else None
    holder = [token]
    dist.broadcast_object_list(holder, src=0)
    token = holder[0]
    folders = {label: Path(p) for label, p in paths.items() if p}
    if env.is_main:
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
            write_text(folder / SHARED_TOKEN, token)
    barrier(env)
    missing = []
    for label, folder in folders.items():
        try:
            seen = (folder / SHARED_TOKEN).read_text().strip()
        except OSError:
            seen = None
        if seen != token:
            missing.append(f"{label} {str(folder)!r}")
    problems = all_gather_object((socket.gethostname(), env.rank, missing), env)
    barrier(env)
    if env.is_main:
        for folder in folders.values():
            (folder / SHARED_TOKEN).unlink(missing_ok=True)
    bad = [(host, rank, where) for host, rank, where in problems if where]
    if bad:
        host, rank, where = bad[0]
        raise UserError(
            f"rank {rank} on {host} does not see what rank 0 wrote to {where[0]} ({len(bad)} of "
            f"{env.world_size} ranks affected): multi-node runs need the run directory and caches "
            "on a "
            "filesystem shared by every node (absolute paths on it); see docs/distributed.md"
        )


@contextmanager
def main_process_first(env: DistEnv) -> Iterator[None]:
    """Rank 0 runs the body first (e.g. builds a data cache or trains a tokenizer), the others
    follow once it is done and find the result cached."""
    if not env.is_main:
        barrier(env)
    yield
    if env.is_main:
        barrier(env)


def _collective_device(env: DistEnv) -> torch.device:
    return env.device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a few floats over all ranks (one collective); identity for a single process."""
    if not env.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(env))
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


class ShardedSampler(Sampler[int]):
    """One seeded permutation per epoch, dealt to the ranks interleaved (rank r takes positions r,
    r+W, …).

    With a per-rank batch of B/W, the ranks' batches at step s together hold positions [s·B,
    (s+1)·B) of the permutation: exactly a single process's batch s. ``skip`` resumes mid-epoch
    without loading (and discarding) the items already trained on."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if size < world_size:
            raise ValueError(f"dataset of {size} items is smaller than the {world_size} processes")
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed
        self.epoch, self.skip = 0, 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        """Start epoch ``epoch`` after the first ``skip`` items of this rank's shard."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        )
        usable = self.size - self.size % self.world_size
        shard = order[self.rank : usable : self.world_size]
        return iter(shard[self.skip :].tolist())

    def __len__(self) -> int:
        return max(0, self.size // self.world_size - self.skip)


class TrainingForward(nn.Module):
    """Routes ``forward`` to ``generator.training_loss``: DDP and FSDP do their work (gradient
    hooks, parameter all-gathers) around ``forward``, which generators do not otherwise use for
    training.

    Returns the ILSD terms as a dict so DDP can find the output tensors; :func:`as_terms` rebuilds
    them."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, batch: Any, student_loops: int | None, lam: float) -> dict[str, Any]:
        terms = self.generator.training_loss(batch, student_loops, lam)
        return {f.name: getattr(terms, f.name) for f in fields(terms)}


def as_terms(output: dict[str, Any] | ILSDTerms) -> ILSDTerms:
    return output if isinstance(output, ILSDTerms) else ILSDTerms(**output)


FSDP_UNITS = ("block", "backbone")


def mixed_precision_policies(param_dtype: torch.dtype | None) -> tuple[Any, Any]:
    """FSDP2 policies of the looped units (blocks, or the backbone) and of the root unit.

    Never a cast of forward inputs (``cast_forward_inputs=False``): the batch — the fp32 regression
    targets (latents, pixels) — reaches the loss in fp32, and the residual stream between blocks
    stays fp32, as in the DDP path. Low precision comes from autocast in both paths (the same
    autocast the trainer opens for DDP); the blocks' weights are gathered in ``param_dtype`` (bf16:
    half the all-gather traffic and memory, the values autocast would compute with anyway),
    gradients reduced in fp32. The root unit (embeddings, head, loop extras) is small and gathered
    in fp32, so no op outside autocast's lists sees a bf16 weight."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    looped = MixedPrecisionPolicy(
        param_dtype=param_dtype,
        reduce_dtype=torch.float32 if param_dtype else None,
        cast_forward_inputs=False,
    )
    root = MixedPrecisionPolicy(
        reduce_dtype=torch.float32 if param_dtype else None, cast_forward_inputs=False
    )
    return looped, root


def move_to_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module.to(device)`` for every tensor that holds data; tensors on the meta device (a
    backbone built for FSDP to materialise shard by shard) stay there."""
    return module._apply(lambda t: t if t.is_meta else t.to(device))


def has_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def _materialize_from_rank0(
    generator: nn.Module, full_state: dict[str, torch.Tensor] | None, env: DistEnv
) -> None:
    """Give every meta tensor of the (already sharded) ``generator`` storage for its shard only,
    then fill every rank's shards from rank 0's full state, one tensor at a time
    (``broadcast_from_rank0``): no rank but rank 0 ever holds a full weight, and rank 0 holds the
    full model only in host memory."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if env.is_main and full_state is None:
        raise ValueError(
            "rank 0 must pass the full initial state to materialise a meta-device model"
        )
    for module in generator.modules():
        local = (*module.parameters(recurse=False), *module.buffers(recurse=False))
        if any(t.is_meta for t in local):
            module.to_empty(device=env.device, recurse=False)
    set_model_state_dict(
        generator,
        dict(full_state) if env.is_main else {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    left = [
        name for name, t in (*generator.named_parameters(), *generator.named_buffers()) if t.is_meta
    ]
    if left:
        raise RuntimeError(f"FSDP materialisation left tensors on the meta device: {left[:3]}")


def wrap_for_training(
    generator: nn.Module,
    env: DistEnv,
    strategy: str = "ddp",
    find_unused_parameters: bool = False,
    fsdp_unit: str = "block",
    reshard_after_forward: bool = True,
    param_dtype: torch.dtype | None = None,
    full_state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """The module the training step calls: plain (one process), DDP, or FSDP2.

    FSDP2 (``fully_shard``) units, ``fsdp_unit``:

    * ``block`` (default): every unique block of the looped core is its own unit, the rest of the
      generator (embeddings, head) the root unit. Only the blocks in use are gathered, so the
      gathered weights and their unsharded gradients scale with one block instead of the whole
      model. A block runs once per loop: with ``reshard_after_forward`` (default) its gather is
      freed after every use and redone at the next loop (least memory, 2·L all-gathers per block and
      step); without it, one gather per block is reused across all L loops of the forward and by the
      backward (one all-gather per block and step, weights of all blocks resident like the one-unit
      wrap, gradients still reduce-scattered per block).
    * ``backbone``: the whole looped core as one unit (one gather serves every loop and block).

    ``param_dtype`` (e.g. bf16): the looped units' weights are gathered in that dtype; see
    :func:`mixed_precision_policies` (inputs and targets are never cast). Parameters become DTensors
    in
    place: build the optimizer after this call.

    Meta-device initialisation: when ``generator`` holds meta tensors (its backbone built under
    ``registry.backbone_on("meta")``), they get storage for this rank's shards only after sharding,
    and rank 0's ``full_state`` (the seeded full build: the weights one process would start from)
    fills them tensor by tensor. Without meta tensors every rank's full weights are overwritten by
    rank 0's first."""
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed.strategy={strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if fsdp_unit not in FSDP_UNITS:
        raise ValueError(f"distributed.fsdp_unit={fsdp_unit!r}; allowed: {', '.join(FSDP_UNITS)}")
    model = TrainingForward(generator)
    if not env.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    meta = has_meta(generator)
    if not meta:  # FSDP does not broadcast: start every rank from rank 0
        for tensor in generator.state_dict().values():
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    looped, root = mixed_precision_policies(param_dtype)
    if fsdp_unit == "block":
        for block in generator.backbone.blocks:
            fully_shard(
                block, mesh=mesh, mp_policy=looped, reshard_after_forward=reshard_after_forward
            )
    else:
        fully_shard(generator.backbone, mesh=mesh, mp_policy=looped)
    fully_shard(model, mesh=mesh, mp_policy=root)
    if meta:
        _materialize_from_rank0(generator, full_state, env)
    return model


def is_sharded(tensor: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def gather_full(obj: Any) -> Any:
    """Replace every sharded tensor (DTensor) in a nested state by its full value on the CPU.

    A collective under FSDP: every rank must call it. Plain tensors are only moved to the CPU.
    """
    if torch.is_tensor(obj):
        if is_sharded(obj):
            obj = obj.full_tensor()
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: gather_full(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(gather_full(v) for v in obj)
    return obj


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` laid out like ``like``: sharded the same way if ``like`` is a DTensor, on its
    device."""
    if is_sharded(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(
            full.to(like.device, like.dtype), like.device_mesh, like.placements
        )
    return full.to(like.device)


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full (gathered) optimizer state: per-parameter tensors shaped like their parameter are
    sharded like it first, so the same checkpoint resumes a single process, DDP or FSDP run."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if any(is_sharded(p) for p in params):
        state = dict(state)
        state["state"] = {
            index: {
                name: shard_like(value, params[int(index)])
                if torch.is_tensor(value) and value.shape == params[int(index)].shape
                else value
                for name, value in per_param.items()
            }
            for index, per_param in state["state"].items()
        }
    optimizer.load_state_dict(state)


def first_non_finite_anywhere(state: dict[str, Any], env: DistEnv) -> str | None:
    """Name of the first floating-point tensor of ``state`` holding NaN/Inf on any rank, read from
    each rank's own shards (no gather); the same answer on every rank (a collective under
    torchrun)."""
    bad = None
    for name, tensor in state.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            continue
        local = tensor.to_local() if is_sharded(tensor) else tensor
        if not bool(torch.isfinite(local).all()):
            bad = name
            break
    if not env.enabled:
        return bad
    names = [n for n in all_gather_object(bad, env) if n is not None]
    return min(names, key=list(state).index) if names else None
