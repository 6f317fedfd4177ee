"""Benchmarks (``elt bench``): training and sampling throughput, MFU and memory of looped models.

    elt bench train      ILSD vs vanilla looping vs a unique stack of equal FLOPs: step time,
                         samples/s, tokens/s, MFU, peak memory
    elt bench sampling   sampling throughput vs loop count and vs batch size; the cost of each loop
    elt bench memory     training memory of the looped stack vs the unique stack (and with per-loop
                         activation checkpointing)
    elt bench trainer    the real Trainer (its bf16/TF32/fused-AdamW/compile defaults) on
                         synthetic data: samples/s, tokens/s, MFU and memory from its own log
    elt bench peers      elt against diffusers' DiT and a plain nn.TransformerEncoder with copied
                         weights (same function, checked): forward, sampling, training step; % of
                         the torch.mm roofline
    elt bench scaling    sampling time of both paradigms (demo shapes) against batch, loops,
                         tokens and steps; fixed and per-unit costs fitted; JSON + PNG plots
    elt bench all        train, sampling and memory, one JSON file each in --out
    elt bench suite      the GPU suite (benchmarks/gpu_suite.sh): environment + all of the above at
                         the sizes of docs/benchmarks.md, eager and compiled, 7 JSON files

The models are paradigm-shaped but synthetic (random data), so no dataset or checkpoint is needed:
``--kind masked`` is a token model like the masked paradigm (codebook ids in, a class token prefix,
cross-entropy head), ``--kind diffusion`` like the DiT one (patch vectors in, adaLN-Zero
conditioning on time and class, regression head). ``elt bench sampling --ckpt RUN`` times a trained
generator's own sampler instead. Variants that are compared are measured interleaved in one process,
so drifts in machine load hit them alike; report ratios on shared machines.

Every benchmark prints a table and writes JSON with its provenance (device, torch, threads,
precision, command line)."""
