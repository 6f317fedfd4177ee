"""The evaluation's Python API (:mod:`elt.eval.run`), called directly with no command line: on the
shipped masked demo model, more loops give better samples in the domain classifier's metrics."""

import pytest

from elt.errors import UserError
from elt.eval.run import SweepRequest, evaluate


@pytest.fixture(scope="module")
def small_domain_suite():
    """The shipped Fashion-MNIST classifier against the first 1000 test images (the full suite's
    10000-image reference and 100 KID subsets take a minute on a laptop CPU)."""
    from elt.data.fashion_mnist import DataNotFoundError, load_arrays
    from elt.eval import suites
    from elt.eval.classifier import load_classifier

    try:
        test_images, test_labels = load_arrays(None, "test")
        train_images, _ = load_arrays(None, "train")
    except DataNotFoundError as exc:
        pytest.skip(f"no Fashion-MNIST on this machine: {exc}")
    reference = suites.Reference("first 1000 test images", test_images[:1000], test_labels[:1000])
    return suites.DomainSuite(
        load_classifier(),
        reference,
        floor_images=train_images[:1000],
        kid_subsets=10,
        kid_subset_size=100,
    )


@pytest.mark.slow
def test_more_loops_sample_better_on_the_masked_demo(small_domain_suite, tmp_path):
    from elt.inference.demo_models import demo_models

    if "masked" not in demo_models():
        pytest.skip("no shipped demo:masked in this install")
    request = SweepRequest(
        ckpts="demo:masked", loops="1,4", steps=[6], num=100, batch_size=100, latency=False
    )
    result = evaluate(request, out=tmp_path, suite=small_domain_suite)
    by_loops = {row["loops"]: row for row in result["rows"]}
    assert sorted(by_loops) == [1, 4] and all(row["n"] == 100 for row in result["rows"])
    # one set of weights, the same seed and labels: only the loop count differs
    assert by_loops[4]["gflops"] == pytest.approx(4 * by_loops[1]["gflops"], rel=0.25)
    assert by_loops[4]["fd_cls"] < by_loops[1]["fd_cls"]
    assert by_loops[4]["kid"] < 0.9 * by_loops[1]["kid"]
    # the real-vs-real floor bounds what any generator reaches at the same N
    assert result["floor"]["fd_cls"] < by_loops[4]["fd_cls"]
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "eval.png").is_file()


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({}, "give --ckpt DIR"),
        ({"samples": ["a", "b"], "ckpts": ["demo:masked"]}, "pairs with --ckpt by position"),
        ({"samples": ["a"]}, "--loops is required"),
        ({"ckpts": "demo:masked", "num": 3}, "too few samples"),
    ],
)
def test_bad_requests_fail_in_one_line_before_any_work(request_args, message, tmp_path):
    with pytest.raises(UserError, match=message):
        evaluate(SweepRequest(**request_args), out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
