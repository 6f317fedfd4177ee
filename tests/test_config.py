"""Configs: presets, overrides, and clear errors for bad keys and values."""

import pytest

from elt.config import ConfigError, load_config
from elt.presets import parse_preset
from elt.registry import backbone_shape


def test_defaults_and_overrides():
    cfg = load_config(None, ["model.loops=6", "optimizer.lr=0.001", "paradigm=diffusion"])
    assert cfg.model.loops == 6 and cfg.optimizer.lr == 0.001 and cfg.paradigm == "diffusion"


def test_preset_sets_shape_and_explicit_keys_win():
    cfg = load_config(None, ["model.preset=ELT-S-4x3"])
    assert (cfg.model.width, cfg.model.heads, cfg.model.unique_layers, cfg.model.loops) == (
        384,
        6,
        4,
        3,
    )
    cfg = load_config(None, ["model.preset=ELT-S-4x3", "model.loops=5"])
    assert cfg.model.loops == 5
    assert parse_preset("ELT-XL-7x4") == {
        "width": 1152,
        "heads": 18,
        "unique_layers": 7,
        "loops": 4,
    }


def test_unique_mode_unrolls_the_loops():
    cfg = load_config(None, ["model.preset=ELT-S-4x3", "ilsd.mode=unique"])
    assert backbone_shape(cfg) == (12, 1)
    assert backbone_shape(load_config(None, ["model.preset=ELT-S-4x3"])) == (4, 3)


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  loops: 4\ntrain:\n  steps: 10\n")
    cfg = load_config(path, ["train.steps=20"])
    assert cfg.model.loops == 4 and cfg.train.steps == 20


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.loop=3", "unknown config key 'model.loop' (did you mean 'model.loops'?)"),
        ("modle.loops=3", "unknown config key 'modle.loops' (did you mean 'model.loops'?)"),
        ("train.stepz=3", "did you mean 'train.steps'?"),
        ("model.loops=abc", "model.loops"),
        ("ilsd.mode=distill", "allowed: ilsd, vanilla, unique"),
        ("paradigm=gan", "allowed: masked, diffusion"),
        ("model.loops=0", "'model.loops' must be >= 1"),
        ("model.preset=ELT-Q-4x3", "unknown model preset 'ELT-Q-4x3'"),
        ("model.width=90", "divisible by model.heads"),
        ("ilsd.min_student_loops=3", "must lie in 1..2"),
        ("model.loops", "not of the form key=value"),
    ],
)
def test_bad_config_gives_one_clear_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_ilsd_with_a_single_loop_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match="ilsd.mode=vanilla"):
        load_config(None, ["model.loops=1"])
    assert load_config(None, ["model.loops=1", "ilsd.mode=vanilla"]).model.loops == 1


def test_missing_config_file_names_shipped_ones():
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config.yaml")


def test_a_saved_config_takes_sampling_overrides_only(tmp_path):
    from elt.config import from_yaml_file, to_yaml

    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(load_config("fmnist_masked")))
    cfg = from_yaml_file(path, ["masked.temperature_base=4.5", "masked.temperature_range=0"])
    assert cfg.masked.temperature_base == 4.5 and cfg.masked.temperature_range == 0.0
    assert cfg.model == from_yaml_file(path).model  # the architecture is untouched
    with pytest.raises(
        ConfigError, match="cannot set 'model.width=8' when sampling; allowed: .*sampling.guidance"
    ):
        from_yaml_file(path, ["model.width=8"])
    with pytest.raises(ConfigError, match="sampling.guidance"):
        from_yaml_file(path, ["sampling.guidance=strong"])
    path.write_text(to_yaml(load_config("fmnist_diffusion")))
    assert from_yaml_file(path, ["diffusion.sampler=ddpm"]).diffusion.sampler == "ddpm"
    from elt.registry import build_generator

    with pytest.raises(ConfigError, match="diffusion.sampler.*allowed: ddim, ddpm, euler"):
        build_generator(
            from_yaml_file(path, ["diffusion.sampler=heun"])
        )  # the paradigm checks its values


@pytest.mark.parametrize(
    "override,new",
    [
        ("masked.guidance=0.5", "sampling.guidance"),
        ("masked.sample_steps=7", "sampling.steps"),
        ("masked.sample_precision=fp32", "sampling.precision"),
        ("diffusion.guidance=3.0", "sampling.guidance"),
        ("diffusion.sample_steps=9", "sampling.steps"),
    ],
)
def test_an_old_sampling_key_from_a_user_is_an_unknown_key_naming_the_new_one(
    tmp_path, capsys, override, new
):
    """Renamed keys are read from checkpoints only: in a user's override or YAML an old key is one
    line naming its new key, and nothing is printed besides."""
    old = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == f"unknown config key {old!r} (renamed: use {new!r})"
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"paradigm: {section}\n{section}:\n  {key}: {override.split('=')[1]}\n")
    with pytest.raises(ConfigError, match=f"unknown config key '{old}'"):
        load_config(path)
    assert capsys.readouterr().err == ""


def test_a_checkpoint_config_with_old_keys_is_migrated_silently(tmp_path, capsys):
    from elt.config import from_yaml_file, to_yaml

    cfg = load_config("fmnist_masked")
    text = to_yaml(cfg).replace(
        "sampling:\n  steps: 12\n  guidance: 1.0\n  precision: bf16\n  compile: false\n"
        "  loops: null\n",
        "",
    )
    assert "sampling:" not in text
    text = text.replace(
        "masked:\n", "masked:\n  sample_steps: 12\n  guidance: 0.5\n  sample_precision: bf16\n"
    )
    (tmp_path / "config.yaml").write_text(text)
    migrated = from_yaml_file(tmp_path / "config.yaml")
    assert (migrated.sampling.steps, migrated.sampling.guidance, migrated.sampling.precision) == (
        12,
        1.5,
        "bf16",
    )
    assert capsys.readouterr().err == ""
    # a diffusion checkpoint's config also holds a masked section: its old keys are dropped, the
    # diffusion section's old keys move (diffusion's guidance kept its meaning: no + 1)
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(load_config("fmnist_diffusion"))
    data["sampling"].update(steps=None, guidance=None)
    data["diffusion"].update(guidance=3.0, sample_steps=9)
    data["masked"].update(guidance=0.5, sample_steps=4)
    diffusion = OmegaConf.to_yaml(OmegaConf.create(data))
    (tmp_path / "config.yaml").write_text(diffusion)
    migrated = from_yaml_file(tmp_path / "config.yaml")
    assert (migrated.sampling.steps, migrated.sampling.guidance) == (9, 3.0)
    assert "guidance" not in migrated.masked
    # an old key given as a sampling override is refused like any key that is not a sampling key
    with pytest.raises(ConfigError, match="cannot set 'masked.guidance=0' when sampling"):
        from_yaml_file(tmp_path / "config.yaml", ["masked.guidance=0"])


def _flat_train_config(cfg) -> str:
    """``cfg`` saved the way versions before the config sections saved it: optimizer, schedule,
    distributed, checkpoint and logging keys flat in ``train:``."""
    from omegaconf import OmegaConf

    from elt.config import RENAMED_KEYS

    data = OmegaConf.to_container(cfg, resolve=True)
    for old, (new, _) in RENAMED_KEYS.items():
        section, key = new.split(".")
        data["train"][old.split(".")[1]] = data[section].pop(key)
    for section in ("optimizer", "lr_schedule", "distributed", "checkpoint", "logging"):
        assert data.pop(section) == {}, section  # every key of the new sections has an old name
    return OmegaConf.to_yaml(OmegaConf.create(data))


def test_a_checkpoint_config_with_flat_train_keys_loads_into_the_sections(tmp_path):
    """Checkpoints saved before the split (the shipped demo models among them) still load: each
    old ``train.*`` key lands on its new key with its value."""
    from elt.config import from_yaml_file

    overrides = [
        "optimizer.lr=0.002",
        "optimizer.weight_decay=0.03",
        "optimizer.betas=[0.8,0.95]",
        "optimizer.weight_decay_exempt=[bias,norm]",
        "optimizer.grad_clip=0.5",
        "lr_schedule.warmup_steps=7",
        "lr_schedule.kind=cosine",
        "lr_schedule.min_ratio=0.1",
        "distributed.strategy=fsdp",
        "distributed.fsdp_unit=backbone",
        "distributed.fsdp_reshard_after_forward=false",
        "distributed.find_unused_parameters=true",
        "distributed.timeout_s=90",
        "checkpoint.every=11",
        "checkpoint.format=dcp",
        "checkpoint.keep=5",
        "checkpoint.handle_signals=false",
        "logging.every=13",
        "logging.sample_every=17",
        "logging.sample_loops=[1,3]",
        "logging.samples_per_class=2",
        "logging.grid_classes=4",
        "logging.tensorboard=false",
        "logging.wandb=true",
        "logging.wandb_project=p",
        "logging.peak_tflops=123.0",
    ]
    cfg = load_config("fmnist_masked", overrides)
    text = _flat_train_config(cfg)
    assert "\noptimizer:" not in text and "  checkpoint_every: 11\n" in text
    (tmp_path / "config.yaml").write_text(text)
    assert from_yaml_file(tmp_path / "config.yaml") == cfg
    # every old key of the demo checkpoints (saved before the split) has a new home
    from pathlib import Path

    import elt

    demo = Path(elt.__file__).parent / "assets" / "demo" / "diffusion" / "config.yaml"
    assert "  lr: 0.001\n" in demo.read_text() and "\noptimizer:" not in demo.read_text()
    loaded = from_yaml_file(demo)
    assert (loaded.optimizer.lr, loaded.logging.sample_loops, loaded.checkpoint.every) == (
        0.001,
        [1, 2, 3, 4, 5],
        1000,
    )


@pytest.mark.parametrize(
    "override,new",
    [("train.lr=0.1", "optimizer.lr"), ("train.lr_schedule=cosine", "lr_schedule.kind")],
)
def test_an_old_train_key_from_a_user_is_an_unknown_key_naming_the_new_one(tmp_path, override, new):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    old = override.split("=")[0]
    assert str(err.value) == f"unknown config key {old!r} (renamed: use {new!r})"
    path = tmp_path / "old.yaml"
    path.write_text(f"train:\n  {old.split('.')[1]}: x\n")
    with pytest.raises(ConfigError, match=f"unknown config key '{old}'"):
        load_config(path)


def test_a_paradigm_owns_its_checks_and_sampling_keys(tmp_path, monkeypatch):
    """A registered paradigm's config class brings its relations (``validate``) and the keys a
    checkpoint may be sampled with (``SAMPLING_KEYS``)."""
    from dataclasses import dataclass
    from typing import ClassVar

    from elt import registry
    from elt.config import from_yaml_file, to_yaml
    from elt.limits import Range

    @dataclass
    class ToyConfig:
        sharpness: float = 1.0
        RULES: ClassVar[dict] = {"sharpness": Range(0, 10)}
        SAMPLING_KEYS: ClassVar[tuple] = ("sharpness",)

        @classmethod
        def validate(cls, cfg):
            if cfg.toyown.sharpness > cfg.model.loops:
                raise ConfigError(f"toyown.sharpness={cfg.toyown.sharpness} > model.loops")

    monkeypatch.setattr(registry, "_PARADIGMS", {**registry.paradigms()})
    registry.register_paradigm("toyown", "toy_task", ToyConfig)
    with pytest.raises(ConfigError, match=r"^toyown.sharpness=5.0 > model.loops$"):
        load_config(None, ["paradigm=toyown", "toyown.sharpness=5"])
    load_config(None, ["toyown.sharpness=5"])  # another paradigm's config: not its business
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(load_config(None, ["paradigm=toyown"])))
    assert from_yaml_file(path, ["toyown.sharpness=2"]).toyown.sharpness == 2.0
    with pytest.raises(ConfigError, match="toyown.sharpness=4.0 > model.loops"):  # checked anew
        from_yaml_file(path, ["toyown.sharpness=4"])


def test_the_config_module_names_no_paradigm():
    """Each paradigm's keys, checks and choices live in its own config class (issue 31)."""
    import inspect
    import re

    import elt.config
    from elt import registry

    source = inspect.getsource(elt.config)
    for name in registry.paradigms():
        assert not re.search(rf"\b{name}\b", source), name


def test_masked_video_needs_the_video_tokenizer_diffusion_does_not():
    with pytest.raises(ConfigError, match="video data .* needs tokenizer.kind=fsq3d"):
        load_config("fmnist_video_masked", ["tokenizer.kind=fsq"])
    cfg = load_config("fmnist_video_masked", ["paradigm=diffusion", "tokenizer.kind=fsq"])
    assert cfg.tokenizer.kind == "fsq" and cfg.data.frames > 0
    # the diffusion config's relations are checked when the config loads (not first at build)
    with pytest.raises(ConfigError, match="temporal_patch_size=3 must divide data.frames="):
        load_config(
            "fmnist_video_masked", ["paradigm=diffusion", "diffusion.temporal_patch_size=3"]
        )


def test_the_old_bench_loops_flag_is_refused(capsys):
    """``elt bench --loops`` (renamed ``--max-loops``) is an unknown option, not a warning."""
    from elt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", "--loops", "4"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --loops 4" in capsys.readouterr().err
