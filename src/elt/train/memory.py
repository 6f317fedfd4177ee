"""Per-GPU training memory of a looped generator under FSDP2, counted from its shapes (a meta-device
build).

The account, in bytes per GPU, for ``world`` ranks, AdamW, bf16 mixed precision (the looped units
gathered in bf16, the small root unit in fp32, gradients reduced in fp32) and the EMA as the trainer
keeps it:

* sharded state (every parameter P, divided over the ranks): fp32 weights 4P, fp32 gradients 4P,
  Adam's two moments 8P, EMA 4P → 20·P / world. The trainer shards the EMA's running averages like
  the parameters (``elt.train.ema.EMA.track_sharded``: no full copy on any rank) and builds the
  model on the meta device, so no GPU ever holds the whole model during training (rank 0 holds the
  seeded initial weights in *host* memory until they are sharded);
* gathered units: while a unit of U parameters computes, its bf16 weights (2U) are whole on every
  rank, and in its backward also its bf16 gradients (2U) and the fp32 reduce-scatter input (4U): 8U
  at the moment of the reduce-scatter. The root unit (embeddings, head) stays gathered for the step.
  ``fsdp_unit=backbone`` gathers all N blocks at once; ``block`` has two blocks in flight (the
  computing one and the prefetched next one), or, with ``reshard_after_forward=False``, every
  block's weights resident after its first loop and two blocks' gradient buffers;
* activations kept for the backward, bf16, per layer application and token: LayerNorm in/out ×2, QKV
  3, attention output 1, MLP hidden 2·r (fc1 output and GELU output) → (8 + 2r)·d values, +4d for
  adaLN (modulated inputs and gated branch outputs); N·L applications per forward, or with per-loop
  activation checkpointing the L loop inputs plus one loop being recomputed; the masked head's
  logits (teacher and student exits: bf16 logits, fp32 log-softmax and softmax) on every position
  (an upper bound).

* sample grids: the EMA is gathered into a full fp32 module (4P on every rank) while a grid is
  drawn, the training activations being free by then; it is dropped at the next EMA update. ``grid``
  is that moment (sharded state + 4P), and ``peak`` the larger of it and the training step.
  Checkpoints stream the weights and the EMA to safetensors one tensor at a time (not counted: one
  tensor).

DDP (``unit="ddp"``) replicates everything, the EMA included: 24·P (+4P of gradient buckets), no
grid term.

Not counted: the CUDA context and allocator fragmentation (~1–3 GiB in practice), the frozen
tokenizer/VAE, optimizer-step temporaries, communication buffers beyond the reduce-scatter input. It
is an estimate to plan with; docs/recipes.md says where it has been checked against a measured peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

STATE_BYTES = 20  # fp32 weights + fp32 grads + Adam m, v + EMA, per parameter, sharded
GRID_SHADOW_BYTES = (
    4  # the fp32 EMA gathered whole on every rank while a sample grid is drawn (FSDP)
)
GATHER_BYTES = 2  # bf16 gathered weights
UNIT_BACKWARD_BYTES = 2 + 2 + 4  # bf16 weights + bf16 unsharded grads + fp32 reduce-scatter input


@dataclass
class MemoryAccount:
    unit: str
    world: int
    micro_batch: int
    checkpoint_loops: bool
    params: int
    sharded_state: float
    gathered: float
    activations: float
    grid_shadow: float = 0.0

    @property
    def model_memory(self) -> float:
        """Everything but activations: what the wrap decides."""
        return self.sharded_state + self.gathered

    @property
    def training(self) -> float:
        """A training step's peak: model memory and the activations kept for the backward."""
        return self.model_memory + self.activations

    @property
    def grid(self) -> float:
        """While a sample grid is drawn: the sharded state and the EMA gathered whole (sampling
        activations, a forward without autograd, are not counted)."""
        return self.sharded_state + self.grid_shadow

    @property
    def peak(self) -> float:
        return max(self.training, self.grid)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "model_memory": self.model_memory,
            "training": self.training,
            "grid": self.grid,
            "peak": self.peak,
        }


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layer_activation_values(width: int, mlp_ratio: float, adaptive: bool) -> float:
    """Values one layer application keeps for its backward, per token (checked against autograd's
    saved tensors in tests/test_memory_account.py)."""
    return (8 + 2 * mlp_ratio + (4 if adaptive else 0)) * width


def activation_bytes(
    generator: nn.Module, micro_batch: int, checkpoint_loops: bool = False
) -> float:
    backbone = generator.backbone
    d, n, loops = backbone.dim, backbone.unique_layers, backbone.loops
    block = backbone.blocks[0]
    ratio = block.mlp.fc1.out_features / d
    tokens = int(generator.seq_len) + 1 if hasattr(generator, "seq_len") else int(generator.tokens)
    per_layer = layer_activation_values(d, ratio, block.adaptive) * tokens * 2 * micro_batch
    if checkpoint_loops:
        trunk = loops * d * tokens * 2 * micro_batch + n * per_layer
    else:
        trunk = n * loops * per_layer
    head = 0.0
    if hasattr(generator, "codebook_size"):
        exits = 2
        head = (
            exits
            * micro_batch
            * int(generator.seq_len)
            * int(generator.codebook_size)
            * (2 + 4 + 4)
        )
    return float(trunk + head)


def fsdp_account(
    generator: nn.Module,
    world: int,
    unit: str = "block",
    reshard_after_forward: bool = True,
    micro_batch: int = 1,
    checkpoint_loops: bool = False,
) -> MemoryAccount:
    """The per-GPU account of ``generator`` (built on the meta device: only shapes are read)."""
    total = sum(p.numel() for p in generator.parameters() if p.requires_grad)
    blocks = [_count(b) for b in generator.backbone.blocks]
    backbone = _count(generator.backbone)
    root = total - backbone
    if unit == "backbone":
        gathered = UNIT_BACKWARD_BYTES * backbone
    elif unit == "block":
        in_flight = sorted(blocks)[-2:]
        if reshard_after_forward:
            gathered = UNIT_BACKWARD_BYTES * sum(in_flight)
        else:
            gathered = GATHER_BYTES * backbone + (UNIT_BACKWARD_BYTES - GATHER_BYTES) * sum(
                in_flight
            )
    elif (
        unit == "ddp"
    ):  # nothing sharded: the whole state on every rank, plus DDP's fp32 gradient buckets
        return MemoryAccount(
            unit,
            world,
            micro_batch,
            checkpoint_loops,
            total,
            float((STATE_BYTES + 4) * total),
            0.0,
            activation_bytes(generator, micro_batch, checkpoint_loops),
        )
    else:
        raise ValueError(f"unknown unit {unit!r}; allowed: block, backbone, ddp")
    gathered += GATHER_BYTES * root
    every = sum(p.numel() for p in generator.parameters())  # the EMA also averages frozen weights
    return MemoryAccount(
        unit,
        world,
        micro_batch,
        checkpoint_loops,
        total,
        STATE_BYTES * total / world,
        float(gathered),
        activation_bytes(generator, micro_batch, checkpoint_loops),
        float(GRID_SHADOW_BYTES * every),
    )
