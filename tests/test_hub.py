"""Hub folders (elt export --format hub): what they hold (weights, config.json, references, the
model card), that elt.load, --ckpt and the pipelines take the folder and a Hub repo id through a
locally populated Hugging Face cache (offline), and push_to_hub's argument checks."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("huggingface_hub")

import elt  # noqa: E402
from elt.cli import main  # noqa: E402
from elt.errors import CheckpointError, UserError  # noqa: E402
from elt.inference import hub  # noqa: E402
from elt.inference.checkpoints import resolve_checkpoint  # noqa: E402
from elt.inference.export import export_inference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_EVAL = ROOT / "results" / "shipped" / "masked" / "eval.json"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as huggingface_hub's cache does after a download: content-addressed
    blobs, a snapshot of relative links to them, refs/main naming the commit."""
    owner, name = repo_id.split("/")
    repo = cache / f"models--{owner}--{name}"
    snapshot = repo / "snapshots" / COMMIT
    for item in sorted(folder.rglob("*")):
        if not item.is_file():
            continue
        data = item.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / item.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def masked_hub(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "elt-masked"
    return export_inference("demo:masked", out, format="hub", eval_path=SHIPPED_EVAL)


def test_hub_folder_holds_weights_config_references_and_card(masked_hub):
    assert sorted(p.name for p in masked_hub.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "references.json",
    ]
    config = json.loads((masked_hub / "config.json").read_text())
    assert config["paradigm"] == "masked" and config["model"]["unique_layers"] == 3
    refs = json.loads((masked_hub / "references.json").read_text())
    assert refs["tokenizer"]["kind"] == "fsq" and refs["vae"] is None
    shipped = load_file(str(resolve_checkpoint("demo:masked") / "model.safetensors"))
    exported = load_file(str(masked_hub / "model.safetensors"))
    assert shipped.keys() == exported.keys()
    assert all(torch.equal(shipped[k], exported[k]) for k in shipped)
    card = (masked_hub / "README.md").read_text()
    generator = elt.load("demo:masked")
    assert card.startswith("---\nlibrary_name: elt\nlicense: apache-2.0\n")
    assert "masked paradigm): N×L = 3×4" in card
    params = sum(v.numel() for v in shipped.values())
    assert f"parameters: {params / 1e6:.2f} M" in card
    gflops = " | ".join(f"{generator.gflops_per_sample(L):.3g}" for L in range(1, 6))
    assert f"| GFLOPs | {gflops} |" in card
    rows = json.loads(SHIPPED_EVAL.read_text())["rows"]
    mine = [r for r in rows if r.get("checkpoint") == "demo:masked"]
    assert card.count("\n| 1 | 12 |") == 1  # the evaluation table: this model's rows only
    assert f"{mine[0]['fd_cls']:.3g}" in card
    assert 'elt.load("PATH/TO/THIS/FOLDER")' in card and "ELTMaskedPipeline.from_pretrained" in card
    assert "## License\n\napache-2.0" in card


def test_elt_load_and_every_ckpt_take_a_hub_folder(masked_hub, tmp_path, capsys):
    want = elt.load("demo:masked").generate([0, 4], 2, 4, seed=1)
    np.testing.assert_array_equal(elt.load(masked_hub).generate([0, 4], 2, 4, seed=1), want)
    np.testing.assert_array_equal(elt.load(str(masked_hub)).generate([0, 4], 2, 4, seed=1), want)
    assert main(["info", str(masked_hub)]) == 0
    assert "masked" in capsys.readouterr().out
    out = tmp_path / "samples"
    code = main(
        ["sample", "--ckpt", str(masked_hub), "--loops", "2", "--num", "2", "--out", str(out),
         "--seed", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0 and any(out.glob("samples_L2*.npz"))


def test_cli_export_hub_replaces_an_earlier_export_and_checks_flags(tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", "--ckpt", "demo:diffusion", "--out", str(out), "--format", "hub",
                 "--license", "mit", "--name", "me/elt-diffusion"]) == 0  # fmt: skip
    assert "wrote Hub folder" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "license: mit" in card and 'elt.load("me/elt-diffusion")' in card
    assert "ELTDiffusionPipeline" in card and "## Evaluation" not in card  # no eval.json here
    assert main(["export", "--ckpt", "demo:diffusion", "--out", str(out), "--format", "hub"]) == 0
    assert "license: apache-2.0" in (out / "README.md").read_text()
    # elt format from a Hub folder: a config.yaml export again, same weights
    back = tmp_path / "back"
    assert main(["export", "--ckpt", str(out), "--out", str(back)]) == 0
    assert (back / "config.yaml").is_file()
    code = main(["export", "--ckpt", "demo:diffusion", "--out", str(tmp_path / "x"), "--eval", "e"])
    assert code == 2 and not (tmp_path / "x").exists()
    assert "--eval: only with --format hub" in capsys.readouterr().err
    with pytest.raises(UserError, match="export format 'zip' is not known; allowed: elt, hub"):
        export_inference("demo:diffusion", tmp_path / "y", format="zip")
    with pytest.raises(UserError, match="not an elt eval result"):
        export_inference("demo:diffusion", tmp_path / "z", format="hub", eval_path=tmp_path)


def test_a_hub_repo_id_loads_offline_through_the_hf_cache(masked_hub, offline_cache):
    populate_cache(offline_cache, "me/elt-masked", masked_hub)
    want = elt.load("demo:masked").generate([3], 1, 4, seed=2)
    for name in ("me/elt-masked", "hf:me/elt-masked"):
        path = resolve_checkpoint(name)
        assert str(path).startswith(str(offline_cache)) and hub.is_hub_folder(path)
        np.testing.assert_array_equal(elt.load(name).generate([3], 1, 4, seed=2), want)
    from elt.pipelines import ELTMaskedPipeline

    pipe = ELTMaskedPipeline.from_pretrained("me/elt-masked")
    pipe.set_progress_bar_config(disable=True)
    got = np.asarray(pipe([3], 4, generator=2, loops=1).images[0])
    np.testing.assert_array_equal(got, want[0, ..., 0])
    with pytest.raises(CheckpointError) as info:
        elt.load("hf:me/not-cached")
    message = str(info.value)
    assert "'me/not-cached'" in message and "HF_HUB_OFFLINE" in message and "\n" not in message


def test_a_pipeline_repo_loads_offline_and_elt_load_names_it(tmp_path, offline_cache):
    from elt.pipelines import ELTDiffusionPipeline, load_pipeline

    pipe = ELTDiffusionPipeline.from_pretrained("demo:diffusion")
    pipe.save_pretrained(tmp_path / "pipe")
    populate_cache(offline_cache, "me/elt-diffusion-pipe", tmp_path / "pipe")
    loaded = load_pipeline("me/elt-diffusion-pipe")
    loaded.set_progress_bar_config(disable=True)
    got = loaded([1], 4, generator=0, loops=2, output_type="np").images
    want = elt.load("demo:diffusion").generate([1], 2, 4, seed=0)
    np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), want)
    with pytest.raises(CheckpointError, match="is a diffusers pipeline"):
        elt.load("me/elt-diffusion-pipe")


def test_repo_ids_never_shadow_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert hub.repo_id_of("runs/missing") is None  # a local folder's child: a path, not a repo
    assert hub.repo_id_of("demo:masked") is None
    assert hub.repo_id_of("owner/model") == "owner/model"
    with pytest.raises(UserError, match="repository id 'a/b/c' is not valid"):
        hub.repo_id_of("hf:a/b/c")
    with pytest.raises(CheckpointError, match="no checkpoint at 'runs/missing'"):
        resolve_checkpoint("runs/missing")


def test_a_latent_model_hub_folder_references_its_vae(tmp_path):
    from test_pipelines import latent_checkpoint

    ckpt = latent_checkpoint(tmp_path)
    folder = export_inference(ckpt, tmp_path / "hub", format="hub", half=False)
    refs = json.loads((folder / "references.json").read_text())
    assert refs["vae"]["class"] == "diffusers.AutoencoderKL"
    assert refs["vae"]["path"] == str(tmp_path / "vae") and refs["vae"]["scaling_factor"] is None
    assert json.loads((folder / "config.json").read_text())["optimizer"]["lr"] == 1e-5
    card = (folder / "README.md").read_text()
    assert f"VAE: diffusers AutoencoderKL from `{tmp_path / 'vae'}` (not included)" in card
    np.testing.assert_array_equal(
        elt.load(folder).generate([1, 2], 2, seed=3), elt.load(ckpt).generate([1, 2], 2, seed=3)
    )


def test_the_card_takes_the_eval_json_of_the_run(tmp_path):
    step = tmp_path / "run" / "checkpoints" / "step_0000001"
    step.mkdir(parents=True)
    for name in ("config.yaml", "model.safetensors"):
        shutil.copy(resolve_checkpoint("demo:masked") / name, step / name)
    shutil.copy(SHIPPED_EVAL, tmp_path / "run" / "eval.json")
    card = export_inference(tmp_path / "run", tmp_path / "hub", format="hub") / "README.md"
    text = card.read_text()
    rows = [r for r in json.loads(SHIPPED_EVAL.read_text())["rows"] if r.get("loops") != "–"]
    assert "## Evaluation" in text and text.count("\n| 1 | 12 |") == 2  # the run's rows, all
    assert f"{rows[-1]['fd_cls']:.3g}" in text


def test_push_to_hub_checks_its_arguments_before_any_network(masked_hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(UserError, match="repository id 'not a repo' is not valid"):
        hub.push_to_hub(masked_hub, "not a repo")
    with pytest.raises(UserError, match="is not an elt Hub folder"):
        hub.push_to_hub(tmp_path, "me/elt-masked")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hub.push_to_hub(masked_hub, "me/elt-masked")


@pytest.mark.slow
def test_a_fresh_process_loads_a_repo_id_with_the_cli(masked_hub, tmp_path):
    """HF_HUB_OFFLINE and HF_HUB_CACHE as a user sets them, read by a new interpreter."""
    cache = tmp_path / "cache"
    populate_cache(cache, "me/elt-masked", masked_hub)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    out = tmp_path / "samples"
    result = subprocess.run(
        [sys.executable, "-m", "elt.cli", "sample", "--ckpt", "me/elt-masked", "--loops", "1",
         "--num", "1", "--out", str(out), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert any(out.glob("samples_L1*.npz"))
    shutil.rmtree(cache)
    result = subprocess.run(
        [sys.executable, "-m", "elt.cli", "info", "me/elt-masked"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "me/elt-masked" in result.stderr
