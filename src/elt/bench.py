"""``elt bench``: training and sampling throughput, MFU and memory of looped models.

    elt bench train      ILSD vs vanilla looping vs a unique stack of equal FLOPs: step time, samples/s,
                         tokens/s, MFU, peak memory
    elt bench sampling   sampling throughput vs loop count and vs batch size; the cost of each loop
    elt bench memory     training memory of the looped stack vs the unique stack (and with per-loop
                         activation checkpointing)
    elt bench trainer    the real Trainer (its bf16/TF32/fused-AdamW/compile defaults) on synthetic data:
                         samples/s, tokens/s, MFU and memory from its own log
    elt bench all        train, sampling and memory, one JSON file each in --out
    elt bench suite      the GPU suite (benchmarks/gpu_suite.sh): environment + all of the above at the
                         sizes of docs/benchmarks.md, eager and compiled, 7 JSON files

The models are paradigm-shaped but synthetic (random data), so no dataset or checkpoint is needed:
``--kind masked`` is a token model like the masked paradigm (codebook ids in, a class token prefix,
cross-entropy head), ``--kind diffusion`` like the DiT one (patch vectors in, adaLN-Zero conditioning on
time and class, regression head). ``elt bench sampling --ckpt RUN`` times a trained generator's own
sampler instead. Variants that are compared are measured interleaved in one process, so drifts in
machine load hit them alike; report ratios on shared machines.

Every benchmark prints a table and writes JSON with its provenance (device, torch, threads, precision,
command line).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elt import registry
from elt.core.blocks import LabelEmbedder, TimestepEmbedder
from elt.core.generator import LoopedGenerator, labels_tensor, loops_per_step, to_uint8
from elt.core.ilsd import StudentLoopSampler, ilsd_lambda, ilsd_loss
from elt.core.looped import LoopedTransformer, LoopOutput
from elt.fileio import write_json
from elt.runtime import resolve_device
from elt.train.perf import device_name, peak_flops

MODES = ("vanilla", "ilsd", "unique")
SMOKE = {"width": 32, "heads": 2, "unique_layers": 2, "loops": 3, "tokens": 16, "batch": 4, "vocab": 64,
         "warmup": 1, "repeats": 2, "sample_steps": 2, "loops_list": [1, 2, 3], "batches": [1, 4]}


# -- models ---------------------------------------------------------------------------------------------------
class BenchModel(nn.Module):
    """The looped core between a paradigm-shaped input and head (see the module docstring)."""

    def __init__(self, kind: str, width: int, unique_layers: int, loops: int, tokens: int, heads: int,
                 vocab: int = 1024, patch_dim: int = 16, num_classes: int = 1000, checkpoint_loops: bool = False):
        super().__init__()
        self.kind, self.tokens, self.vocab, self.patch_dim = kind, tokens, vocab, patch_dim
        cond_dim = width if kind == "diffusion" else None
        self.backbone = LoopedTransformer(width, unique_layers, loops, heads, cond_dim=cond_dim,
                                          checkpoint_loops=checkpoint_loops)
        self.labels = LabelEmbedder(num_classes, width)
        self.pos = nn.Parameter(torch.zeros(1, tokens, width))
        self.norm = nn.LayerNorm(width)
        if kind == "masked":
            self.embed = nn.Embedding(vocab + 1, width)  # + the mask token
            self.out = nn.Linear(width, vocab)
        else:
            self.embed = nn.Linear(patch_dim, width)
            self.time = TimestepEmbedder(width)
            self.out = nn.Linear(width, patch_dim)

    @property
    def sequence_length(self) -> int:
        return self.tokens + (1 if self.kind == "masked" else 0)  # the class token prefix

    def make_batch(self, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, self.labels.num_classes, (batch,), generator=g)
        if self.kind == "masked":
            target = torch.randint(0, self.vocab, (batch, self.tokens), generator=g)
            masked = torch.rand(batch, self.tokens, generator=g) < 0.5
            inputs = torch.where(masked, torch.full_like(target, self.vocab), target)
        else:
            target = torch.randn(batch, self.tokens, self.patch_dim, generator=g)
            inputs = target + torch.randn(batch, self.tokens, self.patch_dim, generator=g)
        batch_data = {"inputs": inputs, "target": target, "labels": labels, "t": torch.rand(batch, generator=g)}
        return {k: v.to(device) for k, v in batch_data.items()}

    def states(self, data: dict[str, torch.Tensor], loops: int | None = None, exit_loops=()) -> LoopOutput:
        h = self.embed(data["inputs"]) + self.pos
        label = self.labels(data["labels"])
        if self.kind == "masked":
            return self.backbone(h, loops=loops, exit_loops=exit_loops, prefix=label.unsqueeze(1))
        return self.backbone(h, cond=label + self.time(data["t"]), loops=loops, exit_loops=exit_loops)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(h))

    def gt_loss(self, pred: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "masked":
            return F.cross_entropy(pred.float().flatten(0, 1), data["target"].flatten())
        return F.mse_loss(pred.float(), data["target"])

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.kind == "masked":
            return -(teacher.float().softmax(-1) * student.float().log_softmax(-1)).sum(-1).mean()
        return F.mse_loss(student.float(), teacher.float())

    def train_flops_per_sample(self) -> float:
        """Model FLOPs of one training sample: backbone matmuls × 3 (forward + backward)."""
        n = self.sequence_length
        return 3.0 * self.backbone.flops_per_token(n) * n


def build_model(args: argparse.Namespace, mode: str, device: torch.device, checkpoint_loops: bool = False):
    """The looped model (N×L) for ilsd/vanilla, the unique stack (N·L×1) of equal FLOPs for unique."""
    layers, loops = (args.unique_layers * args.loops, 1) if mode == "unique" else (args.unique_layers, args.loops)
    torch.manual_seed(0)
    model = BenchModel(args.kind, args.width, layers, loops, args.tokens, args.heads, vocab=args.vocab,
                       checkpoint_loops=checkpoint_loops).to(device)
    if args.compile:
        for block in model.backbone.blocks:
            block.compile(backend=args.compile_backend)
    return model


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def make_train_step(model: BenchModel, mode: str, args: argparse.Namespace, device: torch.device):
    """A closure running one full optimizer step (forward of L_max loops, ILSD terms, backward, AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    sampler = StudentLoopSampler(args.loops, seed=0) if mode == "ilsd" else None
    data = model.make_batch(args.batch, device)
    counter = [0]

    def step() -> None:
        student_loops = sampler.sample() if sampler else None
        with autocast(device, args.precision):
            out = model.states(data, exit_loops=[student_loops] if student_loops else [])
            teacher = model.head(out.final)
            student = model.head(out.exits[student_loops]) if student_loops else None
            terms = ilsd_loss(teacher, student, lambda p: model.gt_loss(p, data), model.distill_loss,
                              ilsd_lambda(counter[0], 1000), student_loops)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        counter[0] += 1

    return step, optimizer


# -- timing ------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int,
                     repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# -- memory ------------------------------------------------------------------------------------------------------
def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(model: BenchModel, mode: str, args: argparse.Namespace, device: torch.device) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (parameters excluded), counted
    exactly with saved-tensor hooks: device-independent, so it is measured on CPUs too."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    data = model.make_batch(args.batch, device)
    sampler_loops = args.loops - 1 if mode == "ilsd" else None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, args.precision):
        out = model.states(data, exit_loops=[sampler_loops] if sampler_loops else [])
        teacher = model.head(out.final)
        student = model.head(out.exits[sampler_loops]) if sampler_loops else None
        terms = ilsd_loss(teacher, student, lambda p: model.gt_loss(p, data), model.distill_loss, 0.5, sampler_loops)
    del terms, out, teacher, student
    return sum(seen.values())


def memory_row(args: argparse.Namespace, mode: str, device: torch.device, checkpoint_loops: bool) -> dict[str, Any]:
    model = build_model(args, mode, device, checkpoint_loops=checkpoint_loops)
    step, optimizer = make_train_step(model, mode, args, device)
    params = tensor_bytes(model.parameters())
    activations = saved_activation_bytes(model, mode, args, device)
    if checkpoint_loops:  # the backward pass recomputes one loop at a time: add one loop's activations
        model.backbone.checkpoint_loops = False
        activations += saved_activation_bytes(model, mode, args, device) // model.backbone.loops
        model.backbone.checkpoint_loops = True
    row = {"mode": mode, "checkpoint_loops": checkpoint_loops, "layers": len(model.backbone.blocks),
           "loops": model.backbone.loops, "params": sum(p.numel() for p in model.parameters()),
           "param_mib": params / 2**20, "grad_mib": params / 2**20, "adam_mib": 2 * params / 2**20,
           "activation_mib": activations / 2**20}
    row["accounted_mib"] = row["param_mib"] + row["grad_mib"] + row["adam_mib"] + row["activation_mib"]
    if device.type == "cuda":
        step()  # optimizer state allocated
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        row["measured_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    del model, step, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# -- benchmarks --------------------------------------------------------------------------------------------------
def bench_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    steps, flops = {}, {}
    for mode in MODES:
        model = build_model(args, mode, device, checkpoint_loops=args.checkpoint_loops)
        steps[mode], _ = make_train_step(model, mode, args, device)
        flops[mode] = (model.train_flops_per_sample(), sum(p.numel() for p in model.parameters()),
                       model.sequence_length)
    median = time_interleaved(steps, device, args.warmup, args.repeats)
    del steps  # free the models before measuring memory one at a time
    peak = peak_flops(device, args.precision == "bf16")
    rows = []
    for mode in MODES:
        flops_per_sample, params, seq = flops[mode]
        samples_per_s = args.batch / median[mode]
        rows.append({"mode": mode, "params": params, "step_ms": 1000 * median[mode],
                     "ratio_vs_vanilla": median[mode] / median["vanilla"], "samples_per_s": samples_per_s,
                     "tokens_per_s": samples_per_s * seq, "tflops": flops_per_sample * samples_per_s / 1e12,
                     "mfu": flops_per_sample * samples_per_s / peak if peak else None})
    if device.type == "cuda":
        for mode in MODES:
            rows[MODES.index(mode)]["peak_mem_mib"] = memory_row(args, mode, device,
                                                                 args.checkpoint_loops)["measured_peak_mib"]
    return {"rows": rows, "peak_tflops": peak / 1e12 if peak else None}


def generic_sampler(model: BenchModel, batch: int, loops: int, steps: int, device: torch.device,
                    precision: str) -> Callable[[], None]:
    """``steps`` no-grad forward passes at ``loops`` loops: the work of an iterative sampler."""
    data = model.make_batch(batch, device)

    @torch.no_grad()
    def run() -> None:
        with autocast(device, precision):
            for _ in range(steps):
                model.head(model.states(data, loops=loops).final)

    return run


def checkpoint_sampler(generator, batch: int, loops: int, steps: int | None) -> Callable[[], None]:
    labels = [i % generator.num_classes for i in range(batch)]
    return lambda: generator.generate(labels, loops=loops, steps=steps, seed=0)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - slope * mx, slope


def bench_sampling(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    generator = None
    if args.ckpt:
        import elt

        generator = elt.load(args.ckpt, device=device)
    else:
        model = build_model(args, "vanilla", device).eval()

    def runner(batch: int, loops: int) -> Callable[[], None]:
        if generator is not None:
            return checkpoint_sampler(generator, batch, loops, args.sample_steps if args.sample_steps else None)
        return generic_sampler(model, batch, loops, args.sample_steps or 8, device, args.precision)

    by_loops = time_interleaved({str(L): runner(args.batch, L) for L in args.loops_list}, device,
                                args.warmup, args.repeats)
    by_batch = time_interleaved({str(b): runner(b, args.loops) for b in args.batches}, device,
                                args.warmup, args.repeats)
    loops_rows = [{"loops": L, "batch": args.batch, "ms": 1000 * by_loops[str(L)],
                   "images_per_s": args.batch / by_loops[str(L)],
                   "ratio_vs_first": by_loops[str(L)] / by_loops[str(args.loops_list[0])]} for L in args.loops_list]
    batch_rows = [{"batch": b, "loops": args.loops, "ms": 1000 * by_batch[str(b)],
                   "images_per_s": b / by_batch[str(b)]} for b in args.batches]
    intercept, slope = fit_line([float(L) for L in args.loops_list], [1000 * by_loops[str(L)] for L in args.loops_list])
    longest = max(args.loops_list)
    return {"by_loops": loops_rows, "by_batch": batch_rows,
            "per_loop": {"ms_per_loop": slope, "fixed_ms": intercept,
                         "loop_share_at_max": slope * longest / (1000 * by_loops[str(longest)])},
            "sampler": f"checkpoint {args.ckpt}" if generator is not None else
                       f"synthetic {args.kind}: {args.sample_steps or 8} forward passes per sample"}


def bench_memory(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    rows = [memory_row(args, "ilsd", device, False), memory_row(args, "unique", device, False),
            memory_row(args, "ilsd", device, True)]
    unique = rows[1]
    for row in rows:
        row["accounted_vs_unique"] = row["accounted_mib"] / unique["accounted_mib"]
        if "measured_peak_mib" in row:
            row["measured_vs_unique"] = row["measured_peak_mib"] / unique["measured_peak_mib"]
    return {"rows": rows}


# -- the real trainer on a synthetic paradigm -------------------------------------------------------------------
SYNTHETIC = {"kind": "masked", "tokens": 64, "vocab": 1024}  # set by ``elt bench trainer`` before building


class SyntheticGenerator(LoopedGenerator):
    """A :class:`BenchModel` behind the paradigm contract, so the Trainer can run it on random data
    (registered as ``paradigm=synthetic`` by ``elt bench trainer`` only)."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.num_classes = cfg.data.num_classes
        m = cfg.model
        self.model = BenchModel(SYNTHETIC["kind"], m.width, *registry.backbone_shape(cfg), SYNTHETIC["tokens"],
                                m.heads, vocab=SYNTHETIC["vocab"], num_classes=self.num_classes,
                                checkpoint_loops=m.checkpoint_loops)

    @property
    def backbone(self) -> LoopedTransformer:  # registered once, under model.backbone
        return self.model.backbone

    def training_loss(self, batch, student_loops, lam):
        data = batch
        out = self.model.states(data, exit_loops=[student_loops] if student_loops else [])
        teacher = self.model.head(out.final)
        student = self.model.head(out.exits[student_loops]) if student_loops else None
        return ilsd_loss(teacher, student, lambda p: self.model.gt_loss(p, data), self.model.distill_loss, lam,
                         student_loops)

    @torch.no_grad()
    def generate(self, class_labels, loops=None, steps=None, guidance=None, seed=None, progress=False):
        """One forward pass drawn as a square grey image of the tokens' mean output (a stand-in)."""
        data = self.model.make_batch(len(class_labels), self.device, seed=seed or 0)
        data["labels"] = labels_tensor(class_labels, self.num_classes, self.device)
        values = self.model.head(self.model.states(data, loops=loops_per_step(loops, 1, self.trained_loops)[0])
                                 .final).float().mean(-1)
        side = int(self.model.tokens ** 0.5)
        image = values[:, : side * side].reshape(-1, 1, side, side)
        return to_uint8(torch.tanh(image - image.mean()))

    def gflops_per_sample(self, loops=None, steps=None, guidance=None):
        n = self.model.sequence_length
        return self.backbone.flops_per_token(n, loops) * n / 1e9


class SyntheticData(torch.utils.data.Dataset):
    def __init__(self, model: BenchModel, size: int):
        self.items = model.make_batch(size, torch.device("cpu"), seed=1)

    def __len__(self) -> int:
        return len(self.items["labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.items.items()}


def build_generator(cfg):
    return SyntheticGenerator(cfg)


def prepare_data(cfg, generator, run_dir, progress=True):
    return SyntheticData(generator.model, cfg.data.limit or 4 * cfg.train.batch_size)


def bench_trainer(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import functools
    import importlib
    import tempfile

    from elt.config import load_config
    from elt.train import trainer as trainer_module
    from elt.train.trainer import Trainer

    registry.TASK_MODULES["synthetic"] = "elt.bench"
    # the registry imports elt.bench by name (a second copy when this file runs as __main__)
    importlib.import_module("elt.bench").SYNTHETIC.update(kind=args.kind, tokens=args.tokens, vocab=args.vocab)
    steps = 2 * args.repeats  # a warm-up window (compilation, allocator), then the timed window
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(None, [
            "paradigm=synthetic", f"model.width={args.width}", f"model.heads={args.heads}",
            f"model.unique_layers={args.unique_layers}", f"model.loops={args.loops}",
            f"model.checkpoint_loops={args.checkpoint_loops}", "data.num_classes=1000",
            f"data.limit={max(4 * args.batch, 64)}", f"train.batch_size={args.batch}", f"train.steps={steps}",
            f"train.log_every={args.repeats}",
            f"train.compile={args.compile}", f"train.device={device}", f"train.out_dir={run_dir}",
            f"train.precision={args.precision}", "train.samples_per_class=1", "train.tensorboard=false",
            "train.handle_signals=false", "train.checkpoint_every=0", f"train.threads={args.threads}"])
        real_compile = trainer_module.compile_blocks
        trainer_module.compile_blocks = functools.partial(real_compile, backend=args.compile_backend)
        try:
            trainer = Trainer(cfg, progress=False)
            trainer.fit()
        finally:
            trainer_module.compile_blocks = real_compile
        records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    last = records[-1]  # the window after warm-up (compilation happens in the first)
    keep = ("samples_per_s", "tokens_per_s", "step_s", "mfu", "mem_peak_gib", "mem_reserved_gib", "rss_peak_mib",
            "loss")
    return {"rows": [{"steps_timed": last["step"] - (records[-2]["step"] if len(records) > 1 else 0),
                      **{k: last.get(k) for k in keep}, "flops_per_sample": trainer.flops_per_sample}],
            "peak_tflops": trainer.peak / 1e12 if trainer.peak else None}


def print_trainer(result: dict[str, Any]) -> None:
    c, r = result["config"], result["rows"][0]
    print(f"Trainer — {c['kind']} {c['unique_layers']}N×{c['loops']}L ILSD, width {c['width']}, {c['tokens']} tokens, "
          f"batch {c['batch']}, {c['precision']}, compile={c['compile']}, {result['device']}")
    memory = (f"{r['mem_peak_gib']:.2f} GiB" if r.get("mem_peak_gib") is not None
              else f"RSS {fmt(r.get('rss_peak_mib'), '.0f')} MiB")
    print(f"{r['samples_per_s']:.1f} samples/s, {r['tokens_per_s']:.0f} tokens/s, step {1000 * r['step_s']:.2f} ms, "
          f"MFU {fmt(r['mfu'], '.1%')}, peak memory {memory} (last {r['steps_timed']} steps)")


# -- output ------------------------------------------------------------------------------------------------------
def command_line(name: str, args: argparse.Namespace) -> str:
    """The benchmark as one explicit command (every size spelled out), to rerun it exactly."""
    parts = ["elt", "bench", name, "--kind", args.kind, "--width", args.width, "--heads", args.heads,
             "--unique-layers", args.unique_layers, "--loops", args.loops, "--tokens", args.tokens,
             "--batch", args.batch, "--precision", args.precision, "--device", args.device,
             "--threads", torch.get_num_threads(), "--warmup", args.warmup, "--repeats", args.repeats]
    if args.kind == "masked":
        parts += ["--vocab", args.vocab]
    if name == "sampling":
        parts += ["--loops-list", ",".join(map(str, args.loops_list)), "--batches", ",".join(map(str, args.batches))]
        parts += ["--sample-steps", args.sample_steps] + (["--ckpt", args.ckpt] if args.ckpt else [])
    if args.compile:
        parts += ["--compile", "--compile-backend", args.compile_backend]
    if args.checkpoint_loops:
        parts.append("--checkpoint-loops")
    return " ".join(str(p) for p in parts)


def provenance(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {"device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "command": command_line(name, args),
            "config": {k: v for k, v in vars(args).items() if k != "func"}}


def fmt(value: Any, spec: str) -> str:
    """Format a number, or "n/a" (right-aligned to the same width) where there is none."""
    if value is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return format("n/a", f">{width}")
    return format(value, spec)


def print_train(result: dict[str, Any]) -> None:
    c = result["config"]
    print(f"training step — {c['kind']} {c['unique_layers']}N×{c['loops']}L vs unique {c['unique_layers'] * c['loops']}"
          f"N×1L, width {c['width']}, {c['tokens']} tokens, batch {c['batch']}, {c['precision']}, "
          f"compile={c['compile']}, {result['device']}, threads {result['threads']}")
    print(f"{'mode':<8} {'params':>11} {'step ms':>9} {'vs vanilla':>10} {'samples/s':>10} {'tokens/s':>11} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9}")
    for r in result["rows"]:
        print(f"{r['mode']:<8} {r['params']:>11,} {r['step_ms']:>9.2f} {r['ratio_vs_vanilla']:>9.3f}x "
              f"{r['samples_per_s']:>10.1f} {r['tokens_per_s']:>11.0f} {r['tflops']:>8.3f} "
              f"{fmt(r['mfu'], '>6.1%')} {fmt(r.get('peak_mem_mib'), '>9.0f')}")


def print_sampling(result: dict[str, Any]) -> None:
    c = result["config"]
    print(f"sampling — {result['sampler']}, width {c['width']}, {c['unique_layers']}N, {result['device']}, "
          f"threads {result['threads']}")
    print(f"{'loops':>5} {'batch':>5} {'ms':>9} {'images/s':>9} {'vs L=' + str(c['loops_list'][0]):>8}")
    for r in result["by_loops"]:
        print(f"{r['loops']:>5} {r['batch']:>5} {r['ms']:>9.2f} {r['images_per_s']:>9.1f} {r['ratio_vs_first']:>7.2f}x")
    print(f"{'batch':>5} {'loops':>5} {'ms':>9} {'images/s':>9}")
    for r in result["by_batch"]:
        print(f"{r['batch']:>5} {r['loops']:>5} {r['ms']:>9.2f} {r['images_per_s']:>9.1f}")
    p = result["per_loop"]
    print(f"cost of each loop: {p['ms_per_loop']:.2f} ms (fixed {p['fixed_ms']:.2f} ms; loops are "
          f"{p['loop_share_at_max']:.0%} of the time at L={max(c['loops_list'])})")


def print_memory(result: dict[str, Any]) -> None:
    c = result["config"]
    print(f"training memory — {c['kind']} {c['unique_layers']}N×{c['loops']}L vs unique, width {c['width']}, "
          f"{c['tokens']} tokens, batch {c['batch']}, {c['precision']}, {result['device']}")
    print(f"{'mode':<8} {'ckpt':>5} {'params MiB':>10} {'grads':>7} {'Adam':>7} {'activ.':>8} {'accounted':>9} "
          f"{'vs unique':>9} {'measured':>9} {'vs unique':>9}")
    for r in result["rows"]:
        print(f"{r['mode']:<8} {str(r['checkpoint_loops']):>5} {r['param_mib']:>10.1f} {r['grad_mib']:>7.1f} "
              f"{r['adam_mib']:>7.1f} {r['activation_mib']:>8.1f} {r['accounted_mib']:>9.1f} "
              f"{r['accounted_vs_unique']:>8.2f}x {fmt(r.get('measured_peak_mib'), '>9.1f')} "
              f"{fmt(r.get('measured_vs_unique'), '>8.2f')}")


BENCHMARKS = {"train": (bench_train, print_train), "sampling": (bench_sampling, print_sampling),
              "memory": (bench_memory, print_memory), "trainer": (bench_trainer, print_trainer)}
ALL = ("train", "sampling", "memory")


def run_benchmark(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    function, printer = BENCHMARKS[name]
    result = {"benchmark": name, **provenance(name, args, device), **function(args, device)}
    printer(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{('_' + args.tag) if args.tag else ''}.json"
    write_json(path, result)
    print(f"wrote {path}\n")
    return result


# -- the GPU suite -----------------------------------------------------------------------------------------------
SUITE_MODEL = {"width": 1024, "heads": 16, "unique_layers": 6, "loops": 4, "tokens": 256, "precision": "bf16",
               "batch": 64, "kind": "masked"}
SUITE = (  # (benchmark, tag, options)
    ("train", "", {"warmup": 5, "repeats": 20}),
    ("train", "compiled", {"warmup": 5, "repeats": 20, "compile": True}),
    ("sampling", "", {"batch": 32, "loops_list": [1, 2, 3, 4, 6, 8], "batches": [1, 8, 32, 128], "sample_steps": 8,
                      "warmup": 2, "repeats": 5}),
    ("memory", "", {}),
    ("trainer", "", {"repeats": 20}),
    ("trainer", "compiled", {"repeats": 20, "compile": True}),
)


def environment_info(device: torch.device) -> dict[str, Any]:
    """GPU, driver, versions, and whether SDPA takes the flash kernel for the suite's attention shape."""
    import subprocess

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device_name(device),
                            "device_type": device.type, "threads": torch.get_num_threads()}
    if device.type != "cuda":
        return info
    info["memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                                             "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError as exc:
        info["nvidia_smi"] = str(exc)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = SUITE_MODEL["heads"]
    q = torch.randn(8, heads, SUITE_MODEL["tokens"] + 1, SUITE_MODEL["width"] // heads, device=device,
                    dtype=torch.bfloat16)
    try:  # only the flash kernel allowed: succeeds iff the model's attention is flash-eligible
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, q, q)
        info["sdpa_flash"] = True
    except RuntimeError as exc:
        info["sdpa_flash"] = f"not used: {str(exc).splitlines()[0]}"
    return info


def run_suite(args: argparse.Namespace) -> int:
    """Every benchmark of the suite in this process; a failing one is reported and the others still run."""
    import copy
    import traceback

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    info = environment_info(device)
    write_json(out / "env.json", info)
    print(json.dumps(info, indent=2))
    failed = []
    for name, tag, options in SUITE:
        run_args = copy.copy(args)
        if not args.smoke:
            vars(run_args).update(SUITE_MODEL)
            vars(run_args).update(options)
        else:
            run_args.compile = options.get("compile", False)
        run_args.tag = tag
        prepare_args(run_args)
        started = time.perf_counter()
        try:
            run_benchmark(name, run_args)
        except Exception:  # noqa: BLE001 - one broken benchmark must not cost the others
            traceback.print_exc()
            failed.append(f"{name}{'_' + tag if tag else ''}")
        print(f"   ({time.perf_counter() - started:.0f} s)\n")
    print(f"suite: {len(SUITE) + 1 - len(failed)} JSON files in {out}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def prepare_args(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on other options and check them."""
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precision == "auto":
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    from elt.config import check_options
    from elt.fileio import check_output_dir

    check_options(at_least_one={"--width": args.width, "--heads": args.heads, "--unique-layers": args.unique_layers,
                                "--loops": args.loops, "--tokens": args.tokens, "--vocab": args.vocab,
                                "--batch": args.batch, "--repeats": args.repeats},
                  not_negative={"--sample-steps": args.sample_steps, "--warmup": args.warmup,
                                "--threads": args.threads})
    check_output_dir(args.out, "--out")
    if args.heads is None:
        args.heads = max(1, args.width // 64)
    if args.width % args.heads:
        from elt.cli import UserError

        raise UserError(f"--width {args.width} must be divisible by --heads {args.heads}")


def cmd_bench(args: argparse.Namespace) -> int:
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.benchmark == "suite":
        from elt.fileio import check_output_dir

        check_output_dir(args.out, "--out")
        resolve_device(args.device)
        if args.device == "auto":
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        return run_suite(args)
    prepare_args(args)
    names = list(ALL) if args.benchmark == "all" else [args.benchmark]
    for name in names:
        run_benchmark(name, args)
    return 0


def _loop_list(text: str) -> list[int]:
    from elt.cli import parse_loops

    return parse_loops(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", choices=[*BENCHMARKS, "all", "suite"],
                   help="which benchmark (all: train, sampling, memory; suite: the GPU suite)")
    p.add_argument("--kind", choices=("masked", "diffusion"), default="masked",
                   help="paradigm-shaped synthetic model (default masked)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=None, help="default: width / 64")
    p.add_argument("--unique-layers", type=int, default=4, help="N, unique blocks")
    p.add_argument("--loops", type=int, default=4, help="L_max (the unique stack has N·L layers, 1 loop)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per sample (e.g. 256 = 16×16 latents)")
    p.add_argument("--vocab", type=int, default=1024, help="codebook size (masked)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: check tracing only)")
    p.add_argument("--checkpoint-loops", action="store_true", help="per-loop activation checkpointing (train)")
    p.add_argument("--loops-list", type=_loop_list, default=[1, 2, 3, 4], help="sampling: loop counts (1-4, 1,2,4)")
    p.add_argument("--batches", type=_loop_list, default=[1, 8, 32], help="sampling: batch sizes")
    p.add_argument("--sample-steps", type=int, default=0, help="sampling steps (synthetic default 8; "
                   "with --ckpt the config's)")
    p.add_argument("--ckpt", default=None, help="sampling: time this trained generator's sampler instead")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per variant (trainer: timed steps, after "
                   "as many warm-up steps)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON files")
    p.add_argument("--tag", default="", help="suffix of the JSON file name (train_TAG.json)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="throughput, MFU and memory benchmarks",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elt.bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
