"""The encode-once cache: built once, reused while its key matches, rebuilt when the key changes."""

import numpy as np
import torch

from elt.data.cache import cached_encode, state_dict_hash


def test_cache_reuses_and_rebuilds_on_key_change(tmp_path):
    calls = []

    def encode(start, stop):
        calls.append((start, stop))
        return np.arange(start, stop, dtype=np.int16)[:, None].repeat(3, 1)

    a = cached_encode(
        tmp_path / "tok",
        {"tokenizer": "abc"},
        10,
        (3,),
        np.int16,
        encode,
        batch_size=4,
        progress=False,
    )
    assert a.shape == (10, 3) and a[7, 2] == 7 and len(calls) == 3
    b = cached_encode(
        tmp_path / "tok", {"tokenizer": "abc"}, 10, (3,), np.int16, encode, progress=False
    )
    assert len(calls) == 3 and np.array_equal(a, b)  # reused
    cached_encode(
        tmp_path / "tok", {"tokenizer": "xyz"}, 10, (3,), np.int16, encode, progress=False
    )
    assert len(calls) == 4  # stale key: rebuilt, not used silently
    assert not list(tmp_path.glob(".*tmp*"))


def test_state_dict_hash_tracks_weights():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    h = state_dict_hash(m)
    assert h == state_dict_hash(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-3
    assert h != state_dict_hash(m)
