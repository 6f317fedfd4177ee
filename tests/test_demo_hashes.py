"""The shipped demo models sample bit-identical images across refactors: SHA-256 of the uint8
samples against hashes recorded from the code that shipped the models
(tests/data/demo_sample_hashes.json).

Float kernels differ between CPU families (vendor and vector ISA: MKL/oneDNN pick other blockings,
so sums run in another order), so the file holds one set of hashes per CPU family, keyed ``"<vendor>
<ISA>"`` (e.g. ``GenuineIntel AVX512``) or by vendor alone. A CPU family with no recorded set skips,
naming its key.

Record this CPU family's set (from code whose samples are known to be right, e.g. the commit that
shipped the models): ``python tests/test_demo_hashes.py``. When a change is MEANT to alter samples,
re-record every family's set on a machine of that family (or remove the sets that cannot be
re-recorded)."""

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

HASHES = Path(__file__).parent / "data" / "demo_sample_hashes.json"
LABELS = [0, 3, 7, 9]
SEED = 1234
# (paradigm, loops, guidance): None = the config's default; guidance values in the shared convention
# output = uncond + s·(cond − uncond) (s = 1: conditional only).
CASES = [
    ("masked", 1, None),
    ("masked", 4, None),
    ("masked", 1, 2.5),
    ("masked", 4, 2.5),
    ("diffusion", 1, None),
    ("diffusion", 4, None),
    ("diffusion", 4, 1.0),
    ("video", 2, None),
    ("video", 4, 1.0),
]


def case_key(paradigm, loops, guidance):
    return f"{paradigm}/L={loops}/guidance={guidance}"


def sample_hash(paradigm, loops, guidance):
    import torch

    from elt.demo import ASSETS
    from elt.inference.checkpoints import load_generator

    generator = load_generator(ASSETS / paradigm)
    steps = 4 if paradigm == "diffusion" else None  # a few denoising steps keep the test fast
    # one thread, as the hashes were recorded: some kernels sum in another order with more threads
    # (the video model's samples change on 2 threads), so the hash must not depend on the machine or
    # on which test ran first
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = generator.generate(LABELS, loops=loops, steps=steps, guidance=guidance, seed=SEED)
    finally:
        torch.set_num_threads(threads)
    assert images.dtype == np.uint8
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"


def cpu_family() -> str:
    """This CPU's key: vendor and the vector ISA PyTorch dispatches to (``torch.backends.cpu``)."""
    import torch

    return f"{cpu_vendor()} {torch.backends.cpu.get_cpu_capability()}"


def expected_hashes() -> tuple[str, dict[str, str]] | None:
    """(key, hashes) recorded for this CPU family: the exact family first, then the vendor alone."""
    recorded = json.loads(HASHES.read_text())["cpu_families"]
    for key in (cpu_family(), cpu_vendor()):
        if key in recorded:
            return key, recorded[key]
    return None


@pytest.mark.parametrize("paradigm,loops,guidance", CASES)
def test_shipped_demo_samples_unchanged(paradigm, loops, guidance):
    found = expected_hashes()
    if found is None:
        pytest.skip(
            f"no demo sample hashes recorded for CPU family {cpu_family()!r} "
            "(record them with python tests/test_demo_hashes.py)"
        )
    key, hashes = found
    assert sample_hash(paradigm, loops, guidance) == hashes[case_key(paradigm, loops, guidance)], (
        f"demo samples changed on CPU family {key!r}"
    )


def test_hash_file_has_every_case_for_every_family():
    recorded = json.loads(HASHES.read_text())["cpu_families"]
    assert recorded, "no CPU family recorded"
    for key, hashes in recorded.items():
        assert set(hashes) == {case_key(*case) for case in CASES}, key


if __name__ == "__main__":
    data = json.loads(HASHES.read_text()) if HASHES.exists() else {"cpu_families": {}}
    family = cpu_family()
    data["cpu_families"][family] = {case_key(*case): sample_hash(*case) for case in CASES}
    HASHES.write_text(json.dumps(data, indent=2) + "\n")
    json.dump({family: data["cpu_families"][family]}, sys.stdout, indent=2)
