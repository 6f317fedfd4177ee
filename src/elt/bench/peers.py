"""``elt bench peers``: elt against the engines a user would pick instead, at identical architecture
and FLOPs.

* diffusion: elt's DiT-style generator against diffusers' ``DiTTransformer2DModel`` of the same
  width, depth (N·L blocks, block i a copy of elt's block i mod N), heads, patch and adaLN-Zero
  conditioning, its weights copied from elt's model, so both compute the same function (the maximal
  absolute difference of their outputs is measured first and recorded). Workloads: one network
  forward, a DDIM sampling run (both networks inside elt's integrator, with classifier-free
  guidance), one training step (forward, x0 loss, backward, AdamW).
* masked: elt's MaskGIT-style generator against a plain PyTorch ``nn.TransformerEncoder`` (pre-norm,
  tanh-GELU, the same embeddings and head, weights copied: equal outputs) for the network forward
  and a MaskGIT decoding run (both inside elt's decoder, same seed: the tokens are compared too).

Every pair is timed interleaved in one process (medians), at each batch size, precision and mode
(eager / ``torch.compile``); the ratio is peer time / elt time (> 1: elt is faster). The limit:
every GEMM the workload runs (matmuls, and attention as its two batched matmuls) is recorded once
with a dispatch mode, and ``torch.mm`` / ``torch.bmm`` replay exactly those GEMMs (shapes, dtype,
count), timed interleaved with the workloads in the same run and thread count; the replay's time is
what the workload would take at the machine's matmul speed, so ``replay time / workload time`` is
the share of that roofline the workload reaches (achieved GFLOP/s ÷ matmul GFLOP/s at the same
shapes).

Zero-initialised layers (adaLN-Zero, the final layer) get random weights first: with them at zero,
both networks would output zeros and the equality check would prove nothing. Label dropout is off on
both sides. Input re-injection (``model.input_injection``) has no counterpart in the peers and is
turned off."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from elt.bench.timing import time_interleaved
from elt.fileio import write_json
from elt.runtime import autocast_context

DEFAULT_CONFIGS = ("fmnist_diffusion", "fmnist_masked")
SMOKE_OVERRIDES = [
    "model.width=32",
    "model.heads=2",
    "model.unique_layers=2",
    "model.loops=2",
    "tokenizer.levels=[5,5,5]",
]
SMOKE_IMAGE_SIZE = 64  # --smoke: larger images (the ImageNet recipes' 256) are made this size
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# -- models ----------------------------------------------------------------------------------------
def load_peer_config(name: str, overrides: list[str]):
    from elt.config import load_config

    return load_config(
        name,
        [
            "model.input_injection=false",
            "model.loop_embedding=false",
            "model.loop_norm=false",
            "model.class_dropout=0.0",
            *overrides,
        ],
    )


def randomise_zero_parameters(module: nn.Module, seed: int = 0) -> None:
    """Give every all-zero parameter (adaLN-Zero, zero-initialised heads) small random values."""
    with torch.no_grad():
        for index, (_, p) in enumerate(module.named_parameters()):
            if p.abs().sum() == 0:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(seed + index))


def build_elt_diffusion(cfg, device: torch.device):
    from elt.diffusion.model import DiffusionGenerator
    from elt.diffusion.process import process_from_config
    from elt.registry import build_backbone

    channels = int(cfg.data.channels)
    size = int(cfg.data.image_size)
    if (
        cfg.diffusion.space == "latent"
    ):  # the VAE is not needed to time the transformer: SD-VAE latents' shape
        channels, size = 4, size // 8
    torch.manual_seed(0)
    generator = DiffusionGenerator(
        cfg,
        build_backbone(cfg, cond_dim=int(cfg.model.width)),
        process_from_config(cfg.diffusion),
        (channels, size, size),
    )
    randomise_zero_parameters(generator)
    return generator.to(device).eval()


def dit_from_elt(generator) -> nn.Module:
    """diffusers' ``DiTTransformer2DModel`` computing the same function as ``generator`` (weights
    copied)."""
    from diffusers import DiTTransformer2DModel

    backbone = generator.backbone
    width, heads = backbone.dim, backbone.blocks[0].attn.heads
    channels, size = generator.data_shape[0], generator.data_shape[1]
    p = generator.patch[0]
    dit = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=channels,
        out_channels=channels,
        num_layers=backbone.unique_layers * backbone.loops,
        sample_size=size,
        patch_size=p,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=generator.num_classes,
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )

    def put(dst: nn.Linear, src: nn.Linear) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    with torch.no_grad():
        dit.pos_embed.proj.weight.copy_(generator.patch_embed.weight.view(width, channels, p, p))
        dit.pos_embed.proj.bias.copy_(generator.patch_embed.bias)
        dit.pos_embed.pos_embed = (
            generator.pos_embed.detach().clone()
        )  # elt's (h, w) sin-cos grid code
        for index, block in enumerate(dit.transformer_blocks):
            src = backbone.blocks[index % backbone.unique_layers]
            emb = block.norm1.emb
            emb.time_proj.downscale_freq_shift = (
                0  # elt's frequencies: exp(-log(P)·i/half), DiT's elt-equal
            )
            put(emb.timestep_embedder.linear_1, generator.time_embed.mlp[0])
            put(emb.timestep_embedder.linear_2, generator.time_embed.mlp[2])
            emb.class_embedder.embedding_table.weight.copy_(generator.label_embed.table.weight)
            emb.class_embedder.dropout_prob = 0.0
            put(block.norm1.linear, src.ada[1])
            q, k, v = src.attn.qkv.weight.chunk(3)
            qb, kb, vb = src.attn.qkv.bias.chunk(3)
            for dst, w, b in (
                (block.attn1.to_q, q, qb),
                (block.attn1.to_k, k, kb),
                (block.attn1.to_v, v, vb),
            ):
                dst.weight.copy_(w)
                dst.bias.copy_(b)
            put(block.attn1.to_out[0], src.attn.proj)
            put(block.ff.net[0].proj, src.mlp.fc1)
            put(block.ff.net[2], src.mlp.fc2)
        put(dit.proj_out_1, generator.final.ada[1])
        # elt's patch vectors are channel-major (c, i, j); DiT's are (i, j, c)
        order = [c * p * p + i * p + j for i in range(p) for j in range(p) for c in range(channels)]
        dit.proj_out_2.weight.copy_(generator.final.linear.weight[order])
        dit.proj_out_2.bias.copy_(generator.final.linear.bias[order])
    return dit.to(generator.device).eval()


def dit_output(
    dit: nn.Module, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    from elt.diffusion.model import TIME_SCALE

    return dit(z, timestep=t * TIME_SCALE, class_labels=labels, return_dict=False)[0]


class StubTokenizer(nn.Module):
    """What the masked generator reads of a tokenizer, without one: the grid and codebook size (the
    decode to pixels is not part of the comparison)."""

    def __init__(self, grid: tuple[int, ...], codebook_size: int, image_size: int, channels: int):
        super().__init__()
        self.token_grid, self.codebook_size = grid, codebook_size
        self.image_size, self.image_channels = image_size, channels

    def decode_gflops(self) -> float:
        return 0.0


def build_elt_masked(cfg, device: torch.device):
    from elt.config import PRETRAINED_TOKENIZER_KINDS
    from elt.masked.model import MaskedGenerator

    t = cfg.tokenizer
    size = int(cfg.data.image_size)
    downsample = int(t.downsample)
    codebook = (
        math.prod(int(v) for v in t.levels) if t.kind not in PRETRAINED_TOKENIZER_KINDS else 1024
    )  # MaskGIT's VQGAN
    grid = (size // downsample, size // downsample)
    torch.manual_seed(0)
    generator = MaskedGenerator(cfg, StubTokenizer(grid, codebook, size, int(cfg.data.channels)))
    randomise_zero_parameters(generator)
    return generator.to(device).eval()


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class TorchMaskGIT(nn.Module):
    """The masked generator's network in plain PyTorch: the same embeddings and head around an
    ``nn.TransformerEncoder`` of N·L pre-norm layers (layer i a copy of elt's block i mod N)."""

    def __init__(self, generator):
        super().__init__()
        backbone = generator.backbone
        block = backbone.blocks[0]
        width = backbone.dim
        layer = nn.TransformerEncoderLayer(
            width,
            block.attn.heads,
            dim_feedforward=block.mlp.fc1.out_features,
            dropout=0.0,
            activation=gelu_tanh,
            layer_norm_eps=1e-6,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, backbone.unique_layers * backbone.loops, enable_nested_tensor=False
        )
        self.token_embed = copy.deepcopy(generator.token_embed)
        self.pos_embed = copy.deepcopy(generator.pos_embed)
        self.embed_norm = copy.deepcopy(generator.embed_norm)
        self.class_table = copy.deepcopy(generator.class_embed.table)
        self.null_class = generator.class_embed.null_class
        self.head = copy.deepcopy(generator.head)
        with torch.no_grad():
            for index, dst in enumerate(self.encoder.layers):
                src = backbone.blocks[index % backbone.unique_layers]
                dst.self_attn.in_proj_weight.copy_(src.attn.qkv.weight)
                dst.self_attn.in_proj_bias.copy_(src.attn.qkv.bias)
                for a, b in (
                    (dst.self_attn.out_proj, src.attn.proj),
                    (dst.linear1, src.mlp.fc1),
                    (dst.linear2, src.mlp.fc2),
                    (dst.norm1, src.norm1),
                    (dst.norm2, src.norm2),
                ):
                    a.weight.copy_(b.weight)
                    a.bias.copy_(b.bias)
        self.to(generator.device).eval()

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        h = torch.cat(
            [
                self.class_table(labels).unsqueeze(1),
                self.embed_norm(self.token_embed(tokens) + self.pos_embed),
            ],
            dim=1,
        )
        return self.head(self.encoder(h)[:, 1:])


# -- equality --------------------------------------------------------------------------------------
def diffusion_inputs(generator, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((batch, *generator.data_shape), generator=g).to(generator.device)
    t = torch.rand(batch, generator=g).to(generator.device)
    labels = (torch.arange(batch) % generator.num_classes).to(generator.device)
    return z, t, labels


def masked_inputs(generator, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, generator.codebook_size, (batch, generator.seq_len), generator=g)
    tokens = torch.where(torch.rand(tokens.shape, generator=g) < 0.5, generator.mask_id, tokens)
    return tokens.to(generator.device), (torch.arange(batch) % generator.num_classes).to(
        generator.device
    )


@torch.no_grad()
def dit_difference(generator, dit: nn.Module, batch: int = 3) -> float:
    """Max |elt − diffusers| of the fp32 network outputs on random inputs (noise, times, labels
    incl. null)."""
    z, t, labels = diffusion_inputs(generator, batch, seed=1)
    labels[-1] = generator.label_embed.null_class
    return float((generator(z, t, labels)[0] - dit_output(dit, z, t, labels)).abs().max())


@torch.no_grad()
def encoder_difference(generator, peer: TorchMaskGIT, batch: int = 3) -> float:
    tokens, labels = masked_inputs(generator, batch, seed=1)
    labels[-1] = -1
    return float((generator.logits(tokens, labels) - peer(tokens, labels)).abs().max())


# -- the limit: GEMMs recorded and torch.mm timed at their shapes ----------------------------------
class GemmRecorder(TorchDispatchMode):
    """Records every matmul the wrapped code dispatches: (kind, batch, m, k, n, dtype), attention as
    the two batched matmuls of its scores and output (its backward as four)."""

    def __init__(self):
        super().__init__()
        self.gemms: list[tuple[str, int, int, int, int, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        base = name.split(".")[0]
        if base in ("mm", "addmm"):
            a, b = (args[0], args[1]) if base == "mm" else (args[1], args[2])
            self.gemms.append(("mm", 1, a.shape[0], a.shape[1], b.shape[1], a.dtype))
        elif base in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if base == "bmm" else (args[1], args[2])
            self.gemms.append(("bmm", a.shape[0], a.shape[1], a.shape[2], b.shape[2], a.dtype))
        elif (
            base == "_native_multi_head_attention"
        ):  # nn.MultiheadAttention's fused inference kernel
            query, heads, proj_weight = args[0], args[4], args[7]
            b, n, d = query.shape
            self.gemms.append(("mm", 1, b * n, d, 3 * d, query.dtype))
            self.gemms += [
                ("bmm", b * heads, n, d // heads, n, query.dtype),
                ("bmm", b * heads, n, n, d // heads, query.dtype),
            ]
            self.gemms.append(("mm", 1, b * n, d, proj_weight.shape[0], query.dtype))
        elif "scaled_dot_product" in base:
            q, k = args[0], args[1]
            if "backward" in base:  # grad_out, q, k, v, ...: dV, dP, dQ, dK
                q, k = args[1], args[2]
            rows, n, s, d = q.shape[0] * q.shape[1], q.shape[2], k.shape[2], q.shape[3]
            pairs = [(n, d, s), (n, s, d)]
            if "backward" in base:
                pairs = [(s, n, d), (n, d, s), (n, s, d), (s, n, d)]
            self.gemms += [("bmm", rows, m, kk, nn_, q.dtype) for m, kk, nn_ in pairs]
        return func(*args, **(kwargs or {}))


def record_gemms(fn: Callable[[], Any]) -> list[tuple]:
    recorder = GemmRecorder()
    with recorder:
        fn()
    return recorder.gemms


def gemm_flops(gemms: list[tuple]) -> float:
    return float(sum(2 * b * m * k * n for _, b, m, k, n, _ in gemms))


def mm_replay(gemms: list[tuple], device: torch.device) -> Callable[[], None]:
    """A function running ``torch.mm`` / ``torch.bmm`` on exactly these GEMMs (shapes, dtypes,
    count, order), on operands allocated once: the workload's matmuls at the machine's matmul speed,
    nothing else."""
    operands: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    for kind, b, m, k, n, dtype in gemms:
        key = (kind, b, m, k, n, dtype)
        if key not in operands:
            lead = () if kind == "mm" else (b,)
            operands[key] = (
                torch.randn(*lead, m, k, device=device).to(dtype),
                torch.randn(*lead, k, n, device=device).to(dtype),
            )
    calls = [(torch.mm if g[0] == "mm" else torch.bmm, *operands[g]) for g in gemms]

    def replay() -> None:
        for op, x, y in calls:
            op(x, y)

    return replay


# -- workloads -------------------------------------------------------------------------------------
def diffusion_train_step(
    model_fn: Callable,
    params: list[nn.Parameter],
    generator,
    batch: int,
    device: torch.device,
    precision: str,
) -> Callable[[], None]:
    """One training step on a fixed batch: noise at fixed times, x0 loss (elt's weighting),
    backward, AdamW."""
    process = generator.process
    x0, t, labels = diffusion_inputs(generator, batch, seed=2)
    noise = torch.randn_like(x0)
    z = process.add_noise(x0, noise, t)
    optimizer = torch.optim.AdamW(
        params, lr=1e-5, **({"fused": True} if device.type == "cuda" else {})
    )

    def step() -> None:
        with autocast_context(device, precision):
            prediction = model_fn(z, t, labels)
        loss = process.weighted_error(process.to_x0_eps(prediction.float(), z, t)[0], x0, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def compiled_forward(function: Callable, device: torch.device) -> Callable:
    """``function`` compiled the way elt's compiled sampling compiles a step
    (:func:`elt.core.generator.compile_step`: frozen weights and the C++ wrapper on a CPU, CUDA
    graphs on a GPU), for both sides of a compiled forward."""
    from elt.core.generator import compile_step

    return compile_step(function, device)


def diffusion_workloads(
    generator,
    dit: nn.Module,
    batch: int,
    precision: str,
    compiled: bool,
    device: torch.device,
    steps: int,
    guidance: float,
) -> dict[str, dict[str, Callable]]:
    from elt.diffusion.sampler import DDIMSampler, sample

    z, t, labels = diffusion_inputs(generator, batch)
    elt_net = compiled_forward(generator, device) if compiled else generator
    dit_net = compiled_forward(dit, device) if compiled else dit
    null = torch.full_like(labels, generator.label_embed.null_class)

    @torch.no_grad()
    def elt_forward():
        with autocast_context(device, precision):
            return elt_net(z, t, labels)[0]

    @torch.no_grad()
    def dit_forward():
        with autocast_context(device, precision):
            return dit_output(dit_net, z, t, labels)

    sampler_generator = copy.copy(generator)  # the same modules, its own sampling settings
    sampler_generator.config = copy.deepcopy(generator.config)
    sampler_generator.config.sampling.precision = precision
    sampler_generator.config.sampling.compile = compiled
    sample_labels = labels.tolist()

    def elt_ddim():
        return sampler_generator.sample_latents(
            sample_labels, steps=steps, guidance=guidance, seed=0, sampler="ddim"
        )

    @torch.no_grad()
    def dit_ddim():
        def denoise(zz, tt, k):
            both = dit_output(
                dit_net, torch.cat([zz, zz]), torch.cat([tt, tt]), torch.cat([labels, null])
            )
            cond, uncond = both.chunk(2)
            return (uncond + guidance * (cond - uncond)).float()

        noise = torch.randn(
            (batch, *generator.data_shape), generator=torch.Generator().manual_seed(0)
        ).to(device)
        with autocast_context(device, precision):
            return sample(denoise, noise, generator.process, DDIMSampler(0.0), [1] * steps)

    train_elt = copy.deepcopy(generator).train()
    train_dit = copy.deepcopy(dit).train()
    elt_train_net = torch.compile(train_elt) if compiled else train_elt
    dit_train_net = torch.compile(train_dit) if compiled else train_dit
    elt_train = diffusion_train_step(
        lambda a, b, c: elt_train_net(a, b, c)[0],
        list(train_elt.parameters()),
        train_elt,
        batch,
        device,
        precision,
    )
    dit_train = diffusion_train_step(
        lambda a, b, c: dit_output(dit_train_net, a, b, c),
        list(train_dit.parameters()),
        train_elt,
        batch,
        device,
        precision,
    )
    return {
        "forward": {"elt": elt_forward, "peer": dit_forward},
        f"ddim {steps} steps, CFG": {"elt": elt_ddim, "peer": dit_ddim},
        "train step": {"elt": elt_train, "peer": dit_train},
    }


def masked_workloads(
    generator,
    peer: TorchMaskGIT,
    batch: int,
    precision: str,
    compiled: bool,
    device: torch.device,
    steps: int,
) -> dict[str, dict[str, Callable]]:
    from elt.masked.sampler import iterative_decode

    tokens, labels = masked_inputs(generator, batch)
    elt_net = compiled_forward(generator.logits, device) if compiled else generator.logits
    peer_net = compiled_forward(peer, device) if compiled else peer

    @torch.no_grad()
    def elt_forward():
        with autocast_context(device, precision):
            return elt_net(tokens, labels)

    @torch.no_grad()
    def peer_forward():
        with autocast_context(device, precision):
            return peer_net(tokens, labels)

    sampler_generator = copy.copy(generator)
    sampler_generator.config = copy.deepcopy(generator.config)
    sampler_generator.config.sampling.precision = precision
    sampler_generator.config.sampling.compile = compiled
    sample_labels = labels.tolist()
    cfg = generator.config.masked

    def elt_decode():
        return sampler_generator.generate_tokens(sample_labels, steps=steps, guidance=1.0, seed=0)

    @torch.no_grad()
    def peer_decode():
        def logits_fn(current, step):
            with autocast_context(device, precision):
                return peer_net(current, labels).float()

        from elt.core import rng

        streams = rng.make_streams(0, None, batch, device)
        return iterative_decode(
            logits_fn,
            batch,
            generator.seq_len,
            generator.mask_id,
            steps,
            generator=streams,
            device=device,
            temperature_base=cfg.temperature_base,
            temperature_range=cfg.temperature_range,
            token_temperature=cfg.token_temperature,
        )

    return {
        "forward": {"elt": elt_forward, "peer": peer_forward},
        f"maskgit {steps} steps": {"elt": elt_decode, "peer": peer_decode},
    }


def paradigm_workloads(
    paradigm: str,
    generator,
    peer: nn.Module,
    batch: int,
    precision: str,
    device: torch.device,
    steps: int,
    guidance: float,
    compiled: bool,
) -> dict[str, dict[str, Callable]]:
    """:func:`diffusion_workloads` or :func:`masked_workloads`, by paradigm."""
    if paradigm == "diffusion":
        return diffusion_workloads(
            generator, peer, batch, precision, compiled, device, steps, guidance
        )
    return masked_workloads(generator, peer, batch, precision, compiled, device, steps)


# -- the benchmark ---------------------------------------------------------------------------------
def bench_peers(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    overrides = list(SMOKE_OVERRIDES) if args.smoke else []
    batches = list(dict.fromkeys(args.batches))
    rows, checks, models, skipped = [], [], [], []
    partial = (
        Path(args.out) / f"peers{('_' + args.tag) if args.tag else ''}.partial.json"
    )  # rows so far
    partial.parent.mkdir(parents=True, exist_ok=True)
    gemm_records: dict = {}
    for name in args.peer_configs:
        cfg = load_peer_config(name, overrides)
        if args.smoke and int(cfg.data.image_size) > SMOKE_IMAGE_SIZE:  # a few tokens (ImageNet)
            cfg = load_peer_config(name, [*overrides, f"data.image_size={SMOKE_IMAGE_SIZE}"])
        paradigm = cfg.paradigm
        if paradigm == "diffusion" and importlib.util.find_spec("diffusers") is None:
            skipped.append(
                {"config": name, "reason": "diffusers is not installed (pip install 'elt[latent]')"}
            )
            print(f"{name}: skipped, {skipped[-1]['reason']}")
            continue
        if paradigm == "diffusion":
            generator = build_elt_diffusion(cfg, device)
            peer = dit_from_elt(generator)
            difference, peer_name = (
                dit_difference(generator, peer),
                "diffusers DiTTransformer2DModel",
            )
            steps, guidance = generator.sampling_settings(args.sample_steps or None, None)
        elif paradigm == "masked":
            generator = build_elt_masked(cfg, device)
            peer = TorchMaskGIT(generator)
            difference, peer_name = (
                encoder_difference(generator, peer),
                "torch nn.TransformerEncoder",
            )
            steps, guidance = generator.sampling_settings(args.sample_steps or None, 1.0)
        else:
            raise ValueError(
                f"elt bench peers compares the diffusion and masked paradigms, not {paradigm!r}"
            )
        backbone = generator.backbone
        model = {
            "config": name,
            "paradigm": paradigm,
            "peer": peer_name,
            "width": backbone.dim,
            "heads": backbone.blocks[0].attn.heads,
            "unique_layers": backbone.unique_layers,
            "loops": backbone.loops,
            "tokens": getattr(generator, "tokens", None) or generator.seq_len + 1,
            "elt_params": sum(p.numel() for p in generator.parameters()),
            "peer_params": sum(p.numel() for p in peer.parameters()),
            "max_abs_difference_fp32": difference,
        }
        models.append(model)
        print(
            f"{name}: elt {model['unique_layers']}N×{model['loops']}L width {model['width']} vs "
            f"{peer_name} "
            f"({model['unique_layers'] * model['loops']} layers, weights copied): max |difference| "
            "of the fp32 "
            f"outputs {difference:.2e}"
        )
        if paradigm == "masked":  # same logits, same decoder, same seed: the same tokens
            work = masked_workloads(generator, peer, 2, "fp32", False, device, steps)
            same = torch.equal(
                *(work[f"maskgit {steps} steps"][side]().flatten() for side in ("elt", "peer"))
            )
            checks.append(
                {"config": name, "check": "maskgit tokens equal (fp32, batch 2)", "ok": bool(same)}
            )
        for precision in args.precisions:
            for mode in args.modes:
                for batch in batches:
                    compiled = mode == "compiled"
                    torch._dynamo.reset() if compiled else None
                    setting = (paradigm, generator, peer, batch, precision, device, steps, guidance)
                    work = paradigm_workloads(*setting, compiled=compiled)
                    eager_work = None  # compiled rows: their GEMMs are recorded from eager code
                    for workload, pair in work.items():
                        started = time.perf_counter()
                        for (
                            fn
                        ) in pair.values():  # compilation (and one warm-up) outside the timed calls
                            fn()
                        compile_s = time.perf_counter() - started
                        key = (name, workload, batch, precision)  # compiled: the eager GEMMs
                        if key not in gemm_records:
                            if compiled and eager_work is None:
                                eager_work = paradigm_workloads(*setting, compiled=False)
                            source = eager_work[workload] if compiled else pair
                            gemm_records[key] = {
                                side: record_gemms(fn) for side, fn in source.items()
                            }
                        gemms = gemm_records[key]
                        timed = dict(pair)
                        for side in (
                            "elt",
                            "peer",
                        ):  # the roofline, timed interleaved with the workloads
                            if gemms[side]:
                                timed[f"{side} mm"] = mm_replay(gemms[side], device)
                        seconds = time_interleaved(timed, device, args.warmup, args.repeats)
                        row = {
                            "config": name,
                            "paradigm": paradigm,
                            "workload": workload,
                            "batch": batch,
                            "precision": precision,
                            "mode": mode,
                            "elt_ms": 1000 * seconds["elt"],
                            "peer_ms": 1000 * seconds["peer"],
                            "peer_over_elt": seconds["peer"] / seconds["elt"],
                            "first_calls_s": compile_s,
                        }
                        for side in ("elt", "peer"):
                            flops = gemm_flops(gemms[side])
                            mm_s = seconds.get(f"{side} mm")
                            row[f"{side}_gflop"] = flops / 1e9 if flops else None
                            row[f"{side}_gflops_per_s"] = (
                                flops / seconds[side] / 1e9 if flops else None
                            )
                            row[f"{side}_mm_gflops_per_s"] = flops / mm_s / 1e9 if mm_s else None
                            row[f"{side}_roofline_share"] = mm_s / seconds[side] if mm_s else None
                        rows.append(row)
                        print_row(row)
                        write_json(
                            partial,
                            {"partial": True, "models": models, "checks": checks, "rows": rows},
                        )
    partial.unlink(missing_ok=True)  # the full JSON replaces it
    return {
        "models": models,
        "checks": checks,
        "rows": rows,
        "skipped": skipped,
        "load": load_average(),
        "note": "peer_over_elt = peer time / elt time (> 1: elt faster); roofline_share = time "
        "torch.mm/bmm "
        "take for the workload's own GEMMs (same shapes, dtype, threads, run) / the workload's "
        "time",
    }


def load_average() -> list[float] | None:
    try:
        import os

        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


HEADER = (
    f"{'config':<17} {'workload':<22} {'batch':>5} {'prec':>4} {'mode':>8} {'elt ms':>9} "
    f"{'peer ms':>9} "
    f"{'peer/elt':>8} {'GFLOP':>8} {'elt %mm':>7} {'peer %mm':>8}"
)


def print_row(row: dict[str, Any]) -> None:
    def pct(key):
        return f"{row[key]:.0%}" if row.get(key) is not None else "n/a"

    gflop = f"{row['elt_gflop']:.3g}" if row.get("elt_gflop") is not None else "n/a"
    print(
        f"{row['config']:<17} {row['workload']:<22} {row['batch']:>5} {row['precision']:>4} "
        f"{row['mode']:>8} "
        f"{row['elt_ms']:>9.2f} {row['peer_ms']:>9.2f} {row['peer_over_elt']:>7.2f}x {gflop:>8} "
        f"{pct('elt_roofline_share'):>7} {pct('peer_roofline_share'):>8}",
        flush=True,
    )


def print_peers(result: dict[str, Any]) -> None:
    print(
        f"\nelt vs peers — {result['device']}, threads {result['threads']}, torch "
        f"{result['torch']}, "
        f"load {result.get('load')}"
    )
    for m in result["models"]:
        print(
            f"  {m['config']}: {m['unique_layers']}N×{m['loops']}L width {m['width']} heads "
            f"{m['heads']} vs "
            f"{m['peer']}: max |difference| {m['max_abs_difference_fp32']:.2e}"
        )
    for s in result.get("skipped", []):
        print(f"  {s['config']}: skipped, {s['reason']}")
    for c in result["checks"]:
        print(f"  {c['config']}: {c['check']}: {c['ok']}")
    print(HEADER)
    for row in result["rows"]:
        print_row(row)
