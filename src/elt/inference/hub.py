"""Hub folders: a trained generator as the Hugging Face Hub expects a model repository.

    FOLDER/
        model.safetensors   the (EMA) weights, fp16 unless exported with --fp32
        config.json         the run's elt config, as JSON (the same content as a checkpoint's
                            config.yaml: elt.load rebuilds the architecture from it)
        references.json     where the tokenizer and the VAE come from (inside model.safetensors,
                            or a diffusers folder / Hub repository the config names)
        README.md           the model card: paradigm, N×L, parameters, GFLOPs per loop count, the
                            evaluation table when the run has one, license, how to load

``elt export --format hub`` (:func:`elt.inference.export.export_inference` with ``format="hub"``)
writes one; ``elt.load`` and every ``--ckpt`` accept such a folder, and a Hub repository id
(``owner/name``, or ``hf:owner/name``) resolved through ``huggingface_hub``'s cache (honouring
``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE``). :func:`push_to_hub` uploads a folder. The Hub functions
need the ``diffusers`` extra (``pip install 'elt-looped[diffusers]'``, which brings
``huggingface_hub``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from elt.errors import CheckpointError, UserError

CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
REFERENCES = "references.json"
CARD = "README.md"
HUB_SCHEME = "hf:"
DEFAULT_LICENSE = "apache-2.0"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
# a diffusers pipeline folder (ELT*Pipeline.save_pretrained), not an elt Hub folder
PIPELINE_INDEX = "model_index.json"


# -- recognising and resolving ---------------------------------------------------------------------
def is_hub_folder(path: str | Path) -> bool:
    """A folder written by :func:`write_folder`: ``config.json`` holding an elt config (a
    ``paradigm`` and a ``model`` section) next to ``model.safetensors``, and no ``config.yaml``."""
    path = Path(path)
    if not ((path / CONFIG_JSON).is_file() and (path / WEIGHTS).is_file()):
        return False
    if (path / "config.yaml").exists() or (path / PIPELINE_INDEX).exists():
        return False
    try:
        data = json.loads((path / CONFIG_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "paradigm" in data and isinstance(data.get("model"), dict)


def repo_id_of(source: Any) -> str | None:
    """The Hub repository id ``source`` names, or ``None``: ``hf:owner/name`` always, a bare
    ``owner/name`` only when no such local path exists (nor its first part as a folder)."""
    if not isinstance(source, str):
        return None
    if source.startswith(HUB_SCHEME):
        repo = source[len(HUB_SCHEME) :]
        check_repo_id(repo)
        return repo
    if not _REPO_ID.match(source) or source.startswith("demo:"):
        return None
    if Path(source).exists() or Path(source.split("/")[0]).is_dir():
        return None
    return source


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise UserError(
            f"Hub repository id {repo_id!r} is not valid; allowed: OWNER/NAME (letters, digits, "
            "'-', '_', '.'), e.g. my-lab/elt-masked-fmnist"
        )
    return repo_id


def _hub_module():
    try:
        import huggingface_hub
    except ImportError:  # pragma: no cover - depends on the install
        raise UserError(
            "Hub repositories need huggingface_hub: pip install 'elt-looped[diffusers]'"
        ) from None
    return huggingface_hub


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value: only the local cache is read."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a Hub repository: from ``huggingface_hub``'s cache (``HF_HUB_CACHE``),
    downloaded first unless ``HF_HUB_OFFLINE`` is set. A repository that is neither cached nor
    reachable is a one-line :class:`CheckpointError`."""
    check_repo_id(repo_id)
    hub = _hub_module()
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            local_files_only=offline(),
        )
    except Exception as exc:  # not cached offline, unknown repository, no network, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = " from the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline() else ""
        raise CheckpointError(
            f"cannot get Hub repository {repo_id!r}{where} ({reason[:160]}); give a local folder, "
            "or download the repository first (huggingface-cli download OWNER/NAME)"
        ) from None
    return Path(folder)


def local_folder(source: Any) -> Path | None:
    """``source`` as a local elt Hub folder: the folder itself, or a repository id's snapshot (a
    diffusers pipeline repository is named as such); ``None`` for anything else (a checkpoint, a run
    directory, ``demo:NAME``). This is the one hook of checkpoint resolution."""
    if isinstance(source, (str, Path)) and not str(source).startswith("demo:"):
        if is_hub_folder(source):
            return Path(source)
    repo = repo_id_of(source)
    if repo is None:
        return None
    folder = snapshot(repo)
    if (folder / PIPELINE_INDEX).is_file():
        raise CheckpointError(
            f"Hub repository {repo!r} is a diffusers pipeline (model_index.json): load it with "
            "elt.pipelines.load_pipeline or ELTMaskedPipeline/ELTDiffusionPipeline.from_pretrained"
        )
    if not is_hub_folder(folder):
        raise CheckpointError(
            f"Hub repository {repo!r} is not an elt model (expected {CONFIG_JSON} with an elt "
            f"config and {WEIGHTS}; write one with elt export --format hub)"
        )
    return folder


def damage_of(path: Path) -> str | None:
    """What is missing from a Hub folder (one phrase), or ``None``."""
    for name in (CONFIG_JSON, WEIGHTS):
        if (path / name).is_symlink() and not (path / name).exists():
            return f"{name} is a broken link"
        if not (path / name).is_file():
            return f"{name} is missing"
    return None


# -- writing ---------------------------------------------------------------------------------------
def references(cfg) -> dict[str, Any]:
    """Where the tokenizer and the VAE of a config come from (what a reader must fetch besides
    ``model.safetensors``)."""
    tok = cfg.tokenizer
    refs: dict[str, Any] = {"tokenizer": None, "vae": None}
    if cfg.paradigm == "masked":
        entry: dict[str, Any] = {"kind": str(tok.kind), "weights": f"{WEIGHTS} (tokenizer.*)"}
        if tok.kind == "pretrained_vq":
            entry.update(
                architecture=str(tok.pretrained_path),
                note="diffusers VQModel folder whose config.json rebuilds the architecture "
                "(tokenizer.pretrained_path); its weights are in model.safetensors",
            )
        else:
            entry.update(levels=list(tok.levels), downsample=int(tok.downsample))
        refs["tokenizer"] = entry
    diffusion = cfg.get("diffusion")
    if cfg.paradigm == "diffusion" and diffusion is not None and diffusion.space == "latent":
        refs["vae"] = {
            "class": "diffusers.AutoencoderKL",
            "path": str(diffusion.vae_path),
            "scaling_factor": diffusion.latent_scale,
            "note": "not included: the folder (or Hub repository) the config's diffusion.vae_path "
            "names must be present where the model is loaded",
        }
    return refs


def _build_for_accounting(cfg):
    """The generator a config describes (random weights), for counting parameters and GFLOPs;
    ``None`` when it cannot be built here (a VAE or VQ folder the config names is absent)."""
    from elt import registry

    try:
        return registry.build_generator(cfg)
    except Exception:
        return None


def _transformer_parameters(generator) -> int:
    head = getattr(generator, "final", None)
    head = head if isinstance(head, torch.nn.Module) else generator.head
    return sum(p.numel() for m in (generator.backbone, head) for p in m.parameters())


def compute_table(cfg, generator=None) -> list[dict[str, Any]]:
    """GFLOPs per sample at each loop count 1..L_max+1 with the config's steps and guidance."""
    generator = generator if generator is not None else _build_for_accounting(cfg)
    if generator is None:
        return []
    rows = []
    for loops in range(1, int(generator.trained_loops) + 2):
        try:
            gflops = float(generator.gflops_per_sample(loops))
        except Exception:
            continue
        rows.append({"loops": loops, "gflops": gflops})
    return rows


EVAL_COLUMNS = (
    ("loops", "L"),
    ("steps", "steps"),
    ("guidance", "guidance"),
    ("gflops", "GFLOPs/sample"),
    ("fd_cls", "FD_cls ↓"),
    ("class_acc", "class acc ↑"),
    ("fid", "FID ↓"),
    ("inception_score", "IS ↑"),
    ("fvd", "FVD ↓"),
    ("precision", "precision ↑"),
    ("recall", "recall ↑"),
    ("ms_per_sample", "ms/sample"),
)


def eval_rows(path: str | Path | None, source: str = "") -> list[dict[str, Any]]:
    """The rows of an ``elt eval`` result (``eval.json`` or its folder), those of ``source`` when
    the file holds several models'; a missing or unreadable file is a one-line error."""
    if path is None:
        return []
    path = Path(path)
    path = path / "eval.json" if path.is_dir() else path
    try:
        rows = json.loads(path.read_text())["rows"]
        if not isinstance(rows, list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"--eval {str(path)!r} is not an elt eval result (give the eval.json 'elt eval' "
            "wrote, or its folder)"
        ) from None
    rows = [r for r in rows if isinstance(r, dict) and r.get("loops") not in (None, "–")]
    mine = [r for r in rows if r.get("checkpoint") == source]
    return mine or rows


def find_eval(ckpt: Path) -> Path | None:
    """An ``eval.json`` next to a checkpoint or in its run directory (``RUN/eval.json``,
    ``RUN/eval/eval.json``), or ``None``."""
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    for candidate in (ckpt / "eval.json", run / "eval.json", run / "eval" / "eval.json"):
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if key == "class_acc" and isinstance(value, float):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "/")


def eval_table(rows: list[dict[str, Any]]) -> str:
    columns = [(k, name) for k, name in EVAL_COLUMNS if any(k in r for r in rows)]
    if not rows or not columns:
        return ""
    lines = [
        "| " + " | ".join(name for _, name in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_cell(r.get(k), k) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def model_card(
    cfg,
    *,
    name: str,
    parameters: int,
    transformer_parameters: int | None,
    compute: list[dict[str, Any]],
    evaluation: list[dict[str, Any]],
    license: str = DEFAULT_LICENSE,
) -> str:
    """The README.md of a Hub folder (front matter for the Hub, then plain Markdown)."""
    m, d = cfg.model, cfg.data
    paradigm = str(cfg.paradigm)
    n, loops = int(m.unique_layers), int(m.loops)
    mode = str(cfg.ilsd.mode)
    video = int(d.get("frames", 0) or 0)
    shape = f"{video}×" if video else ""
    shape += f"{d.image_size}×{d.image_size}×{d.channels}"
    pipeline = "ELTMaskedPipeline" if paradigm == "masked" else "ELTDiffusionPipeline"
    sampling = cfg.sampling
    steps = sampling.get("steps")
    guidance = sampling.get("guidance")
    lines = [
        "---",
        "library_name: elt",
        f"license: {license}",
        "tags:",
        "- elt",
        "- looped-transformer",
        f"- {paradigm}",
        "- class-conditional-image-generation" if not video else "- video-generation",
        "---",
        "",
        f"# {name}",
        "",
        f"An Elastic Looped Transformer ({paradigm} paradigm): N×L = {n}×{loops}, {n} unique "
        f"blocks looped {loops} times (width {m.width}, {m.heads} heads), trained with "
        f"{'Intra-Loop Self Distillation' if mode == 'ilsd' else mode + ' training'}, so one "
        "checkpoint samples at any loop count.",
        "",
        f"- data: {d.name}, {shape}, {d.num_classes} classes",
        f"- parameters: {parameters / 1e6:.2f} M in {WEIGHTS}"
        + (
            f" ({transformer_parameters / 1e6:.2f} M in the looped blocks and the head)"
            if transformer_parameters
            else ""
        ),
        f"- sampling defaults: steps {steps if steps is not None else 'paradigm default'}, "
        f"guidance {guidance if guidance is not None else 'paradigm default'}",
    ]
    refs = references(cfg)
    if refs["tokenizer"]:
        lines.append(
            f"- tokenizer: {refs['tokenizer']['kind']} (weights inside {WEIGHTS}; {REFERENCES})"
        )
    if refs["vae"]:
        lines.append(f"- VAE: diffusers AutoencoderKL from `{refs['vae']['path']}` (not included)")
    if compute:
        lines += [
            "",
            "## Compute per loop count",
            "",
            "GFLOPs per sample (forward matmuls, all sampling steps, guidance counted twice):",
            "",
            "| loops | " + " | ".join(str(r["loops"]) for r in compute) + " |",
            "|---|" + "---|" * len(compute),
            "| GFLOPs | " + " | ".join(f"{r['gflops']:.3g}" for r in compute) + " |",
        ]
    table = eval_table(evaluation)
    if table:
        lines += ["", "## Evaluation", "", table]
    source = name if "/" in name else "PATH/TO/THIS/FOLDER"
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "import elt",
        "",
        f'generator = elt.load("{source}")',
        "images = generator.generate([0, 1, 2], loops=2, seed=0)  # uint8 N×H×W×C",
        "```",
        "",
        "With diffusers (`pip install 'elt-looped[diffusers]'`):",
        "",
        "```python",
        f"from elt.pipelines import {pipeline}",
        "",
        f'pipe = {pipeline}.from_pretrained("{source}")',
        "out = pipe(class_labels=[0, 1, 2], loops=2, generator=0)  # out.images, out.gflops",
        "```",
        "",
        f"On the command line: `elt sample --ckpt {source} --loops 1-{loops}`.",
        "",
        "## License",
        "",
        f"{license}",
        "",
    ]
    return "\n".join(lines)


def write_folder(
    out: str | Path,
    cfg,
    state: dict[str, torch.Tensor],
    *,
    metadata: dict[str, str],
    name: str | None = None,
    evaluation: list[dict[str, Any]] = (),
    license: str = DEFAULT_LICENSE,
) -> Path:
    """Write a Hub folder atomically (built under a temporary name, then renamed; an earlier Hub
    folder at ``out`` is replaced)."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from elt.fileio import atomic_dir
    from elt.version import __version__

    out = Path(out)
    data = OmegaConf.to_container(cfg, resolve=True)
    generator = _build_for_accounting(cfg)
    compute = compute_table(cfg, generator)
    parameters = sum(int(v.numel()) for v in state.values())
    card = model_card(
        cfg,
        name=name or out.name,
        parameters=parameters,
        transformer_parameters=_transformer_parameters(generator) if generator else None,
        compute=compute,
        evaluation=list(evaluation),
        license=license,
    )
    refs = {"elt_version": __version__, **references(cfg)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, replace=True) as tmp:
        (tmp / CONFIG_JSON).write_text(json.dumps(data, indent=1) + "\n")
        (tmp / REFERENCES).write_text(json.dumps(refs, indent=1) + "\n")
        (tmp / CARD).write_text(card)
        save_file(state, str(tmp / WEIGHTS), metadata={**metadata, "format": "pt"})
        mask = os.umask(0)
        os.umask(mask)
        for item in tmp.iterdir():
            os.chmod(item, 0o666 & ~mask)
    return out


# -- sharing ---------------------------------------------------------------------------------------
def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload a Hub folder (:func:`write_folder`) to ``repo_id`` (created when absent); returns the
    repository's URL. Needs network access and a token (``token`` or ``huggingface-cli login``).
    Refused before any network access: a folder that is not an elt Hub folder, a bad repo id,
    ``HF_HUB_OFFLINE`` set."""
    folder = Path(folder)
    check_repo_id(repo_id)
    if not is_hub_folder(folder):
        raise UserError(
            f"{str(folder)!r} is not an elt Hub folder (expected {CONFIG_JSON} and {WEIGHTS}; "
            "write one with elt export --format hub)"
        )
    if offline():
        raise UserError("cannot push to the Hub with HF_HUB_OFFLINE set; unset it to upload")
    hub = _hub_module()
    api = hub.HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or f"Upload elt model {folder.name}",
    )
    return str(url)
