"""MaskGIT's VQGAN (elt.tokenizers.maskgit_vq) from its two public weight layouts.

The checkpoints here are synthetic: random weights under the released tree's names and layouts,
at MaskGIT's released depth (5 stages × 2 residual blocks, 16× downsampling, 1024 codes) but 32
filters instead of 128 and 16-dimensional codes instead of 256, so everything runs in seconds.
``flax_params`` is written from the published model definition (google-research/maskgit,
``maskgit/nets/vqgan_tokenizer.py``: ``nn.compact`` names submodules ``Conv_i``, ``ResBlock_i``,
``GroupNorm_i``, numbered per type in call order); ``torch_port_state`` from 1d-tokenizer's
``modeling/modules/maskgit_vqgan.py``. ``reference_encode`` / ``reference_decode`` run the Flax
tree directly (channels-last, HWIO kernels, float64), independently of the module under test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from elt.tokenizers.maskgit_vq import (
    MaskGITCheckpointError,
    MaskGITVQConfig,
    MaskGITVQTokenizer,
    convert_maskgit,
    load_maskgit_checkpoint,
    read_flax_msgpack,
)

MULTIPLIERS = (1, 1, 2, 2, 4)  # released: maskgit/configs/vqgan_config.py
RES_BLOCKS = 2
CODES = 1024
FILTERS, DIM = 32, 16  # released: 128, 256
SIZE = 64  # → 4×4 tokens


def flax_params(
    filters=FILTERS,
    dim=DIM,
    codes=CODES,
    multipliers=MULTIPLIERS,
    res_blocks=RES_BLOCKS,
    channels=3,
    seed=0,
):
    """The released checkpoint's tree ({"params": {encoder, decoder, quantizer}}), random values."""
    rng = np.random.default_rng(seed)

    def conv(k, c_in, c_out, bias=True):
        p = {"kernel": rng.normal(0, (k * k * c_in) ** -0.5, (k, k, c_in, c_out))}
        if bias:
            p["bias"] = rng.normal(0, 0.1, c_out)
        return p

    def norm(c):
        return {"scale": 1 + 0.2 * rng.normal(size=c), "bias": 0.2 * rng.normal(size=c)}

    def resblock(c_in, c_out):
        p = {"GroupNorm_0": norm(c_in), "Conv_0": conv(3, c_in, c_out, False)}
        p |= {"GroupNorm_1": norm(c_out), "Conv_1": conv(3, c_out, c_out, False)}
        if c_in != c_out:  # the skip conv maps the branch output: out → out channels
            p["Conv_2"] = conv(1, c_out, c_out, False)
        return p

    encoder, blocks, c = {"Conv_0": conv(3, channels, filters, False)}, [], filters
    for m in multipliers:
        for _ in range(res_blocks):
            blocks.append(resblock(c, filters * m))
            c = filters * m
    blocks += [resblock(c, c) for _ in range(res_blocks)]
    encoder |= {f"ResBlock_{i}": b for i, b in enumerate(blocks)}
    encoder |= {"GroupNorm_0": norm(c), "Conv_1": conv(1, c, dim)}

    convs = [conv(3, dim, c)]
    blocks = [resblock(c, c) for _ in range(res_blocks)]
    for i in reversed(range(len(multipliers))):
        for _ in range(res_blocks):
            blocks.append(resblock(c, filters * multipliers[i]))
            c = filters * multipliers[i]
        if i > 0:
            convs.append(conv(3, c, c))
    decoder = {"GroupNorm_0": norm(c)}
    convs.append(conv(3, c, channels))
    decoder |= {f"Conv_{i}": p for i, p in enumerate(convs)}
    decoder |= {f"ResBlock_{i}": b for i, b in enumerate(blocks)}
    tree = {
        "encoder": encoder,
        "decoder": decoder,
        "quantizer": {"codebook": rng.uniform(-1, 1, (codes, dim))},
    }
    return {"params": _as_float32(tree)}


def _as_float32(tree):
    if isinstance(tree, dict):
        return {k: _as_float32(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


def pack_flax(tree) -> bytes:
    """flax.serialization.msgpack_serialize's wire format: arrays as msgpack extension 1 holding
    (shape, dtype name, C-order bytes)."""
    import msgpack

    def ext(x):
        if isinstance(x, np.ndarray):
            data = msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(1, data)
        if isinstance(x, np.generic):
            data = msgpack.packb(((), x.dtype.name, x.tobytes()), use_bin_type=True)
            return msgpack.ExtType(3, data)
        raise TypeError(type(x))

    return msgpack.packb(tree, default=ext, strict_types=True)


def chunked(array: np.ndarray, parts: int) -> dict:
    """flax's form of an array too big for one msgpack object (tuples as "0", "1", ... dicts)."""
    flat = array.reshape(-1)
    pieces = np.array_split(flat, parts)
    return {
        "__msgpack_chunked_array__": True,
        "shape": {str(i): n for i, n in enumerate(array.shape)},
        "chunks": {str(i): p for i, p in enumerate(pieces)},
    }


def torch_port_state(tree, multipliers=MULTIPLIERS, res_blocks=RES_BLOCKS) -> dict:
    """The same weights as 1d-tokenizer's PyTorch port names and lays them out."""
    params, levels, r = tree["params"], len(multipliers), res_blocks
    enc, dec, state = params["encoder"], params["decoder"], {}

    def conv(p, name):
        state[f"{name}.weight"] = torch.from_numpy(p["kernel"]).permute(3, 2, 0, 1).contiguous()
        if "bias" in p:
            state[f"{name}.bias"] = torch.from_numpy(p["bias"])

    def norm(p, name):
        state[f"{name}.weight"] = torch.from_numpy(p["scale"])
        state[f"{name}.bias"] = torch.from_numpy(p["bias"])

    def block(p, name):
        norm(p["GroupNorm_0"], f"{name}.norm1")
        conv(p["Conv_0"], f"{name}.conv1")
        norm(p["GroupNorm_1"], f"{name}.norm2")
        conv(p["Conv_1"], f"{name}.conv2")
        if "Conv_2" in p:
            conv(p["Conv_2"], f"{name}.nin_shortcut")

    conv(enc["Conv_0"], "encoder.conv_in")
    for i in range(levels):
        for j in range(r):
            block(enc[f"ResBlock_{i * r + j}"], f"encoder.down.{i}.block.{j}")
    for j in range(r):
        block(enc[f"ResBlock_{levels * r + j}"], f"encoder.mid.{j}")
    norm(enc["GroupNorm_0"], "encoder.norm_out")
    conv(enc["Conv_1"], "encoder.conv_out")
    conv(dec["Conv_0"], "decoder.conv_in")
    for j in range(r):
        block(dec[f"ResBlock_{j}"], f"decoder.mid.{j}")
    for k, level in enumerate(reversed(range(levels))):  # the port's `up` is indexed by level
        for j in range(r):
            block(dec[f"ResBlock_{r + k * r + j}"], f"decoder.up.{level}.block.{j}")
        if level > 0:
            conv(dec[f"Conv_{k + 1}"], f"decoder.up.{level}.upsample_conv")
    norm(dec["GroupNorm_0"], "decoder.norm_out")
    conv(dec[f"Conv_{levels}"], "decoder.conv_out")
    state["quantize.embedding.weight"] = torch.from_numpy(params["quantizer"]["codebook"])
    return state


# ---- an independent forward pass over the Flax tree (NHWC, float64) -------------------------


def _t(a):
    return torch.from_numpy(np.asarray(a)).double()


def ref_conv(x, p):
    """Flax nn.Conv, 'SAME' padding, stride 1: a sum of shifted matmuls with the HWIO kernel."""
    kernel = _t(p["kernel"])
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    padded = F.pad(x, (0, 0, kw // 2, kw // 2, kh // 2, kh // 2))
    out = sum(
        padded[:, dy : dy + h, dx : dx + w, :] @ kernel[dy, dx]
        for dy in range(kh)
        for dx in range(kw)
    )
    return out + _t(p["bias"]) if "bias" in p else out


def ref_norm(x, p, groups=32, eps=1e-6):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(dim=(1, 2, 4), keepdim=True)
    var = ((g - mean) ** 2).mean(dim=(1, 2, 4), keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(n, h, w, c)
    return y * _t(p["scale"]) + _t(p["bias"])


def swish(x):
    return x * torch.sigmoid(x)


def ref_block(x, p):
    h = ref_conv(swish(ref_norm(x, p["GroupNorm_0"])), p["Conv_0"])
    h = ref_conv(swish(ref_norm(h, p["GroupNorm_1"])), p["Conv_1"])
    return h + (ref_conv(h, p["Conv_2"]) if "Conv_2" in p else x)


def reference_features(tree, pixels01):
    """Encoder features N×h×w×D of images N×H×W×C in [0, 1]."""
    enc, levels = tree["params"]["encoder"], len(MULTIPLIERS)
    x, b = ref_conv(pixels01.double(), enc["Conv_0"]), 0
    for i in range(levels):
        for _ in range(RES_BLOCKS):
            x, b = ref_block(x, enc[f"ResBlock_{b}"]), b + 1
        if i < levels - 1:  # TF-style 2×2 average pooling
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(dim=(2, 4))
    for _ in range(RES_BLOCKS):
        x, b = ref_block(x, enc[f"ResBlock_{b}"]), b + 1
    return ref_conv(swish(ref_norm(x, enc["GroupNorm_0"])), enc["Conv_1"])


def reference_encode(tree, pixels01):
    z = reference_features(tree, pixels01)
    codebook = _t(tree["params"]["quantizer"]["codebook"])
    return ((z[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)


def reference_decode(tree, ids):
    """Decoder output N×H×W×C (MaskGIT's [0, 1] range, not clamped) of token ids N×h×w."""
    dec, levels = tree["params"]["decoder"], len(MULTIPLIERS)
    z = _t(tree["params"]["quantizer"]["codebook"])[ids]
    x, b, c = ref_conv(z, dec["Conv_0"]), 0, 1
    for _ in range(RES_BLOCKS):
        x, b = ref_block(x, dec[f"ResBlock_{b}"]), b + 1
    for i in reversed(range(levels)):
        for _ in range(RES_BLOCKS):
            x, b = ref_block(x, dec[f"ResBlock_{b}"]), b + 1
        if i > 0:  # nearest-neighbour 2× then a 3×3 conv
            x = x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
            x, c = ref_conv(x, dec[f"Conv_{c}"]), c + 1
    return ref_conv(swish(ref_norm(x, dec["GroupNorm_0"])), dec[f"Conv_{c}"])


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree():
    return flax_params()


@pytest.fixture(scope="module")
def sources(tree, tmp_path_factory):
    """The same weights as a Flax msgpack file (codebook chunked, as flax stores big arrays) and as
    the PyTorch port's .bin."""
    pytest.importorskip("msgpack")
    root = tmp_path_factory.mktemp("maskgit")
    params = dict(tree["params"])
    params["quantizer"] = {"codebook": chunked(params["quantizer"]["codebook"], 3)}
    (root / "tokenizer_checkpoint").write_bytes(pack_flax({"params": params}))
    torch.save(torch_port_state(tree), root / "port.bin")
    return root / "tokenizer_checkpoint", root / "port.bin"


def images(n=2, seed=1):
    """Smooth random images in [-1, 1] (N×3×SIZE×SIZE)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, SIZE // 8, SIZE // 8, generator=g)
    return F.interpolate(small, size=SIZE, mode="bilinear", align_corners=False) * 2 - 1


# ---- tests -------------------------------------------------------------------------------------


def test_flax_and_pytorch_port_convert_to_the_same_module(sources, tmp_path):
    flax_file, port_file = sources
    from_flax, layout_a = load_maskgit_checkpoint(flax_file)
    from_port, layout_b = load_maskgit_checkpoint(port_file)
    assert (layout_a, layout_b) == ("flax", "torch")
    config = MaskGITVQConfig(filters=FILTERS, embedding_dim=DIM)  # read from the checkpoints
    assert from_flax.config == from_port.config == config
    a, b = from_flax.state_dict(), from_port.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the converted folders hold the same weights, and load through the tokenizer class
    for src, out in ((flax_file, tmp_path / "a"), (port_file, tmp_path / "b")):
        convert_maskgit(src, out)
        meta = json.loads((out / "config.json").read_text())
        assert meta["kind"] == "maskgit_vq" and meta["architecture"]["codebook_size"] == CODES
    ta = MaskGITVQTokenizer.from_folder(tmp_path / "a", SIZE)
    tb = MaskGITVQTokenizer.from_folder(tmp_path / "b", SIZE)
    for name, value in ta.state_dict().items():
        assert torch.equal(value, tb.state_dict()[name]), name
        assert torch.equal(value, from_flax.state_dict()[name.removeprefix("vq.")]), name


def assert_close(actual, reference, tol=1e-4):
    """Max |difference| within ``tol`` of the reference's scale (float32 against float64)."""
    error = (actual.double() - reference).abs().max().item()
    scale = max(1.0, reference.abs().max().item())
    assert error <= tol * scale, f"max abs error {error:.3g} (reference scale {scale:.3g})"


def test_encode_decode_round_trip_matches_the_flax_reference(tree, sources, tmp_path):
    convert_maskgit(sources[0], tmp_path / "vq")
    tok = MaskGITVQTokenizer.from_folder(tmp_path / "vq", SIZE)
    x = images()
    pixels01 = ((x + 1) / 2).permute(0, 2, 3, 1)  # MaskGIT works on [0, 1], channels last
    features = tok.vq.encoder((x + 1) / 2)
    ref_features = reference_features(tree, pixels01).permute(0, 3, 1, 2)
    assert_close(features, ref_features)
    ids = tok.encode(x)
    ref_ids = reference_encode(tree, pixels01)
    assert ids.shape == (2, SIZE // 16, SIZE // 16) and ids.dtype == torch.long
    assert torch.equal(ids, ref_ids)
    assert len(ids.unique()) > 4  # the test images do not all land on one code
    raw = tok.vq.decode(ids)
    ref_raw = reference_decode(tree, ids).permute(0, 3, 1, 2)
    assert_close(raw, ref_raw)
    inside = ((ref_raw > 0) & (ref_raw < 1)).double().mean()
    assert inside > 0.3  # the clamp below does not hide the comparison
    decoded = tok.decode(ids)
    assert decoded.shape == x.shape
    assert_close(decoded, ref_raw.clamp(0, 1) * 2 - 1)


def test_flax_reader_handles_flax_leaf_kinds(tmp_path):
    pytest.importorskip("msgpack")
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    bf16_bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16: float32's top half
    import msgpack

    bf16 = msgpack.ExtType(
        1, msgpack.packb(((3, 4), "bfloat16", bf16_bits.tobytes()), use_bin_type=True)
    )
    tree = {
        "half": values.astype(np.float16),
        "chunked": chunked(values, 5),
        "step": np.int32(7),
        "nested": {"list_like": {"0": values}},
        "bf16": bf16,  # jax's bfloat16, written as flax writes it
    }
    path = tmp_path / "ckpt"
    path.write_bytes(pack_flax(tree))
    read = read_flax_msgpack(path)
    np.testing.assert_array_equal(read["half"], values.astype(np.float16))
    np.testing.assert_array_equal(read["chunked"], values)
    assert read["step"] == 7
    np.testing.assert_array_equal(read["nested"]["list_like"]["0"], values)
    expected_bf16 = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(read["bf16"], expected_bf16)
    assert np.abs(read["bf16"] - values).max() < 0.01


def _first_error(path) -> str:
    with pytest.raises(MaskGITCheckpointError) as info:
        load_maskgit_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_partial_or_wrong_checkpoint_names_the_first_bad_tensor(tree, tmp_path):
    pytest.importorskip("msgpack")
    import copy

    partial = copy.deepcopy(tree)
    del partial["params"]["decoder"]["ResBlock_7"]["Conv_1"]
    del partial["params"]["encoder"]["ResBlock_5"]["GroupNorm_1"]  # comes first in module order
    (tmp_path / "partial").write_bytes(pack_flax(partial))
    message = _first_error(tmp_path / "partial")
    assert "encoder/ResBlock_5/GroupNorm_1/scale" in message
    assert f"({FILTERS * 2},)" in message  # the expected shape (stage 2: 2 × filters)

    wrong = copy.deepcopy(tree)
    kernel = wrong["params"]["decoder"]["Conv_3"]["kernel"]
    wrong["params"]["decoder"]["Conv_3"]["kernel"] = kernel[:, :, :, :-1]
    (tmp_path / "wrong").write_bytes(pack_flax(wrong))
    message = _first_error(tmp_path / "wrong")
    c = FILTERS * 2
    assert f"decoder/Conv_3/kernel has shape (3, 3, {c}, {c - 1}), expected (3, 3, {c}, {c})" in (
        message
    )

    port = torch_port_state(tree)
    port["decoder.up.2.upsample_conv.weight"] = port["decoder.up.2.upsample_conv.weight"][:, :-1]
    del port["decoder.up.0.block.1.conv2.weight"]
    torch.save(port, tmp_path / "port.bin")
    message = _first_error(tmp_path / "port.bin")
    assert (
        f"decoder.up.2.upsample_conv.weight has shape ({c}, {c - 1}, 3, 3), expected "
        f"({c}, {c}, 3, 3)" in message
    )

    # not a tokenizer at all: a MaskGIT transformer-like tree
    (tmp_path / "transformer").write_bytes(pack_flax({"params": {"Embed_0": tree["params"]}}))
    assert "encoder/Conv_0/kernel" in _first_error(tmp_path / "transformer")


def test_cli_converts_and_refuses_bad_input(sources, tmp_path, capsys):
    from elt.cli import main

    out = tmp_path / "vq"
    assert main(["tokenizer", "convert-maskgit", str(sources[1]), str(out)]) == 0
    assert "tokenizer.kind=maskgit_vq" in capsys.readouterr().out
    assert main(["tokenizer", "convert-maskgit", str(sources[0]), str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["tokenizer", "convert-maskgit", str(sources[0]), str(out), "--force"]) == 0
    capsys.readouterr()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a checkpoint")
    assert main(["tokenizer", "convert-maskgit", str(garbage), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "garbage.bin" in err
    assert not (tmp_path / "x").exists()  # nothing half-written


def tiny_maskgit_folder(root, multipliers=(1, 2, 2), channels=3):
    """A converted MaskGIT VQ folder at reduced depth (4× downsampling), via the PyTorch-port path
    (no msgpack needed): for tests of the recipes and the masked paradigm."""
    tree = flax_params(multipliers=multipliers, channels=channels)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(torch_port_state(tree, multipliers=multipliers), root / "port.bin")
    config = MaskGITVQConfig(
        filters=FILTERS, embedding_dim=DIM, channel_multipliers=multipliers, image_channels=channels
    )
    return convert_maskgit(root / "port.bin", root / "maskgit_vq", config=config)


def test_the_masked_paradigm_trains_and_samples_on_it(sources, tmp_path):
    """tokenizer.kind=maskgit_vq through the factory, the token cache and sampling."""
    from elt.config import load_config
    from elt.masked.task import prepare_data
    from elt.registry import build_generator
    from test_folders import write_tree
    from test_masked import TINY_MODEL

    convert_maskgit(sources[1], tmp_path / "vq")
    write_tree(tmp_path / "images", broken=False)
    overrides = [
        *TINY_MODEL,
        "data.name=folder",
        f"data.root={tmp_path / 'images'}",
        "data.num_classes=2",
        "data.channels=3",
        f"data.image_size={SIZE}",
        "data.hflip=false",
        "tokenizer.kind=maskgit_vq",
        f"tokenizer.pretrained_path={tmp_path / 'vq'}",
        f"tokenizer.path={tmp_path / 'cache'}",
    ]
    cfg = load_config("fmnist_masked", overrides)
    generator = build_generator(cfg)
    assert generator.codebook_size == CODES and generator.seq_len == (SIZE // 16) ** 2
    dataset = prepare_data(cfg, generator, tmp_path / "run", progress=False)
    reference = MaskGITVQTokenizer.from_folder(tmp_path / "vq", SIZE)
    for name, value in reference.state_dict().items():
        assert torch.equal(generator.tokenizer.state_dict()[name], value), name
    from elt.data.datasets import build_dataset

    image, _ = build_dataset(cfg.data, "train")[0]
    tokens, _ = dataset[0]
    assert torch.equal(tokens, reference.encode(image[None]).flatten())
    assert 0 <= int(dataset.cache[..., :-1].min()) and int(dataset.cache[..., :-1].max()) < CODES
    samples = generator.generate([0, 1], seed=0)
    assert samples.shape == (2, SIZE, SIZE, 3)
    assert generator.tokenizer.decode_gflops() > 0
    for wrong, says in (("/nope", "no MaskGIT VQ folder"), (sources[1], "is a file; convert")):
        with pytest.raises(Exception, match=says) as info:
            build_generator(
                load_config(
                    "fmnist_masked", [*overrides[:-2], f"tokenizer.pretrained_path={wrong}"]
                )
            )
        assert "elt tokenizer convert-maskgit" in str(info.value)
