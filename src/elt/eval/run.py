"""The evaluations behind ``elt eval`` as Python calls: checkpoints and sample folders swept over
loop counts (:func:`evaluate`), several sweeps merged into one table (:func:`merge`), the
real-vs-real floor (:func:`floor`) and the domain classifier retrained with its floor
(:func:`train_classifier`).

    from elt.eval.run import SweepRequest, evaluate

    result = evaluate(SweepRequest(ckpts=["demo:masked"], loops=[1, 4], num=64), out="eval")
    [(row["loops"], row["fd_cls"]) for row in result["rows"]]

Every input is checked before any slow work (one-line :class:`~elt.errors.UserError` naming the
``elt eval`` option that carries it); outputs are written atomically (:mod:`elt.eval.sweep`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from elt.config import check_options
from elt.core.schedule import parse_loops
from elt.errors import UserError
from elt.eval import classifier as classifier_lib
from elt.eval.folder_classifier import FolderClassifierFeatures
from elt.eval.inputs import (
    check_ckpts_fit_classifier,
    check_domain_inputs,
    check_models,
    check_num,
    load_classifier,
    user_errors,
)
from elt.eval.suites import DomainSuite, FVDSuite, InceptionSuite, load_reference
from elt.eval.sweep import (
    SweepInputError,
    SweepModel,
    check_result_shape,
    check_samples,
    merge_results,
    run_sweep,
    write_outputs,
)
from elt.fileio import check_output_dir, write_json
from elt.inference.checkpoints import load_config_of, load_generator, resolve_checkpoint
from elt.sampling import check_sampling_request
from elt.train.distributed import distributed_session


@dataclass
class SweepRequest:
    """What ``elt eval`` sweeps: the options of the command, with the same names and defaults.

    ``ckpts`` are checkpoints, run directories or ``demo:NAME``; ``samples`` are folders of ``elt
    sample`` output paired with ``ckpts`` by position; ``loops`` are operating points (loop counts,
    schedules, adaptive exits; default 1..L_max); ``steps`` a list of sampling steps (default: the
    config's); ``metrics`` is ``domain`` (Fashion-MNIST classifier), ``inception`` or ``fvd`` (both
    need ``reference``)."""

    ckpts: Sequence[str] = ()
    samples: Sequence[str | Path] = ()
    names: Sequence[str] = ()
    loops: Sequence | None = None
    steps: Sequence[int] | None = None
    num: int = 1000
    metrics: str = "domain"
    reference: str | None = None
    classifier: str | None = None
    inception_weights: str | None = None
    i3d: str | None = None
    data_root: str | None = None
    guidance: float | None = None
    seed: int = 0
    batch_size: int = 256
    latency_batch: int = 1
    latency_repeats: int = 3
    latency: bool = True
    device: str = "cpu"
    ema: bool = True
    progress: bool = True

    def __post_init__(self):  # one checkpoint or a '--loops' string also work from Python
        for name in ("ckpts", "samples", "names"):
            value = getattr(self, name) or ()
            setattr(self, name, [value] if isinstance(value, (str, Path)) else list(value))
        if isinstance(self.loops, str):
            self.loops = parse_loops(self.loops)


def check_request(request: SweepRequest, out: str | Path | None = None) -> None:
    """Everything that can be checked before a model is loaded: numbers, the output folder, the
    models' pairing, checkpoints, and (when sampling) the sample count against each checkpoint's
    loops and memory."""
    check_options(seeds={"--seed": request.seed}, finite={"--guidance": request.guidance})
    if out is not None:  # before any sampling: a bad folder fails now, not after the sweep
        check_output_dir(out, "--out")
    check_models(request.ckpts, request.samples, request.names, request.loops)
    if request.metrics == "domain":  # a folder classifier: each model's shape, from config.yaml
        check_ckpts_fit_classifier(request.ckpts, request.classifier)
    if not request.samples:  # with samples: after their files and counts are checked (sweep)
        check_num(request.num, request.metrics)
        for ckpt in request.ckpts:
            check_sampling_request(ckpt, request.num, request.batch_size, request.loops)


def build_suite(request: SweepRequest):
    """The metric suite of ``request.metrics`` (its weights and reference data loaded)."""
    if request.metrics == "domain":
        extractor = load_classifier(request.classifier, device=request.device)
        if isinstance(extractor, FolderClassifierFeatures):
            return DomainSuite.from_folder_classifier(
                extractor, progress=request.progress, seed=request.seed
            )
        return DomainSuite.fashion_mnist(
            extractor,
            data_root=request.data_root,
            progress=request.progress,
            seed=request.seed,
        )
    if not request.reference:
        raise UserError(
            f"--metrics {request.metrics} needs --reference (an .npz with mu/sigma or arr_0, or a "
            "folder of real images)"
        )
    try:
        reference = load_reference(request.reference)
    except ValueError as exc:
        raise UserError(f"bad --reference: {exc}") from exc
    if request.metrics == "inception":
        from elt.eval.inception import InceptionFeatures

        features = InceptionFeatures(request.inception_weights, device=request.device)
        return InceptionSuite(features, reference, progress=request.progress)
    from elt.eval.i3d import I3DFeatures

    features = I3DFeatures(request.i3d, device=request.device)
    return FVDSuite(features, reference, progress=request.progress)


def model_name(ckpt: str) -> str:
    """``<run dir> [<mode>]`` so that ELT / vanilla / unique runs stay apart on one plot."""
    path = resolve_checkpoint(ckpt)
    run = path.parent.parent if path.parent.name == "checkpoints" else path
    return f"{run.name} [{load_config_of(path).ilsd.mode}]"


def build_models(request: SweepRequest) -> list:
    """One :class:`~elt.eval.sweep.SweepModel` per checkpoint / samples folder (weights loaded)."""
    ckpts, samples, names = list(request.ckpts), list(request.samples), list(request.names)
    models = []
    for i in range(max(len(ckpts), len(samples))):
        ckpt = ckpts[i] if ckpts else None
        folder = Path(samples[i]) if samples else None
        if folder is not None and not folder.is_dir():
            raise UserError(f"samples folder {folder} not found")
        generator = load_generator(ckpt, ema=request.ema, device=request.device) if ckpt else None
        name = names[i] if names else (model_name(ckpt) if ckpt else folder.name)
        if any(m.name == name for m in models):  # plot lines are grouped by name: keep them apart
            name = f"{name} #{i + 1}"
        models.append(SweepModel(name, generator, folder, str(ckpt) if ckpt else None))
    return models


def sweep(request: SweepRequest, suite=None) -> dict:
    """The sweep of a checked request (:func:`check_request`): models loaded, sample folders
    checked, then every model at every (steps, loops) in ``suite`` (default: :func:`build_suite`);
    returns the record :func:`elt.eval.sweep.write_outputs` saves."""
    with user_errors():
        models = build_models(request)
        if (
            request.metrics == "domain"
            and check_ckpts_fit_classifier([], request.classifier) is None
        ):
            check_domain_inputs(models)  # the Fashion-MNIST classifier: grey 28/32 px
        loops = request.loops or list(
            range(1, max(m.generator.trained_loops for m in models if m.generator) + 1)
        )
        for model in models:  # missing files or too few samples: before the reference features
            if model.samples_dir is not None:
                check_samples(model.samples_dir, loops, request.num)
        check_num(request.num, request.metrics)
        suite = suite or build_suite(request)  # before any sampling: missing weights/data first
        return run_sweep(
            models,
            suite,
            loops,
            steps=request.steps or [None],
            num=request.num,
            seed=request.seed,
            guidance=request.guidance,
            batch_size=request.batch_size,
            latency_batch=request.latency_batch,
            latency_repeats=request.latency_repeats,
            measure=request.latency,
            progress=request.progress,
        )


def evaluate(request: SweepRequest, out: str | Path | None = None, suite=None) -> dict | None:
    """Check ``request``, sweep it and, with ``out``, write ``eval.json``, ``eval.csv``, ``eval.md``
    and ``eval.png`` there (``out`` is checked first: a bad folder fails before any sampling).
    Under torchrun every rank samples its share and rank 0 computes the metrics and writes; the
    other ranks get ``None``."""
    check_request(request, out)
    with distributed_session(request.device) as env:
        result = sweep(request, suite)
        if not env.is_main:
            return None
    if out is not None:
        write_outputs(result, out)
    return result


def read_result(source: str | Path) -> dict:
    """The record in an ``elt eval`` folder (or its ``eval.json``), checked to be a sweep's."""
    path = Path(source) / "eval.json" if Path(source).is_dir() else Path(source)
    if not path.is_file():
        raise UserError(
            f"no eval.json at {source} (give a folder written by 'elt eval' or its eval.json)"
        )
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc
    try:
        check_result_shape(result)
    except SweepInputError as exc:
        raise UserError(f"{path}: {exc}") from exc
    return result


def merge(
    sources: Sequence[str | Path], out: str | Path | None = None, title: str | None = None
) -> dict:
    """Several ``elt eval`` outputs (e.g. models swept at different loop counts) → one record,
    written to ``out`` (table and plot) when given."""
    if out is not None:
        check_output_dir(out, "--out")
    results = [read_result(source) for source in sources]
    result = merge_results(results)
    if title:
        result["provenance"]["title"] = title
    if out is not None:
        write_outputs(result, out)
    return result


def floor(
    num: int = 10000,
    classifier=None,
    data_root: str | None = None,
    progress: bool = True,
    extractor=None,
) -> dict:
    """FD_cls, KID and PRDC of ``num`` Fashion-MNIST training images against the test set, and the
    classifier's test accuracy (the best a generator can score in the domain metrics). With a
    folder classifier (``elt eval train-classifier --data DIR``): its held-out images against its
    training split, and its held-out accuracy."""
    check_num(num)
    with user_errors():
        extractor = extractor or load_classifier(classifier)
        if isinstance(extractor, FolderClassifierFeatures):
            result = DomainSuite.from_folder_classifier(extractor, progress=progress).floor(num)
            result["description"] = (
                f"{result['n']} held-out real images of {extractor.record.get('data_root')} vs "
                "the classifier's training split; class_acc = held-out accuracy"
            )
            return result
        suite = DomainSuite.fashion_mnist(extractor, data_root=data_root, progress=progress)
        result = suite.floor(num)
    result["description"] = (
        f"{result['n']} Fashion-MNIST training images (seeded random subset) vs the 10000 "
        "test images; class_acc = classifier accuracy on the test images"
    )
    return result


def train_classifier(
    out: str | Path = "fmnist-classifier",
    epochs: int = 5,
    seed: int = 0,
    threads: int = 1,
    data_root: str | None = None,
    floor_num: int | None = 10000,
    progress: bool = True,
    on_trained=None,
) -> dict:
    """Train the domain classifier into ``out`` (:func:`elt.eval.classifier.train_classifier`), then
    record its real-vs-real floor of ``floor_num`` images next to the weights (``None``: no floor).
    ``on_trained(record)`` is called between the two (the floor takes a while)."""
    check_options(not_negative={"--threads": threads}, seeds={"--seed": seed})
    if floor_num is not None:
        check_num(floor_num, what="--floor-num")
    out = Path(out)  # never the package's shipped copy (elt.fileio refuses that)
    check_output_dir(out, "--out")
    with user_errors():
        record = classifier_lib.train_classifier(
            out, epochs=epochs, seed=seed, threads=threads, data_root=data_root, progress=progress
        )
        if on_trained is not None:
            on_trained(record)
        if floor_num is not None:
            extractor = load_classifier(out / record["weights"])
            record["floor"] = floor(
                floor_num, data_root=data_root, progress=progress, extractor=extractor
            )
            write_json(out / classifier_lib.RECORD_NAME, record, ensure_ascii=False)
    return record


def train_folder_classifier(
    data: str | Path,
    out: str | Path,
    image_size: int | None = None,
    epochs: int = 5,
    holdout: float = 0.15,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """A classifier for an image folder (``elt eval train-classifier --data DIR``; see
    :mod:`elt.eval.folder_classifier`) written to ``out``, with its real-vs-real floor (held-out
    images vs the training split) recorded in ``classifier.json``."""
    from elt.eval import folder_classifier

    check_options(not_negative={"--threads": threads}, seeds={"--seed": seed})
    if not Path(data).is_dir():
        raise UserError(f"--data {data}: no such folder (give a folder of class subfolders)")
    out = Path(out)
    check_output_dir(out, "--out")
    with user_errors():
        record = folder_classifier.train_folder_classifier(
            data,
            out,
            image_size=image_size,
            epochs=epochs,
            holdout=holdout,
            seed=seed,
            threads=threads,
            progress=progress,
        )
        extractor = folder_classifier.load_folder_classifier(out)
        record["floor"] = DomainSuite.from_folder_classifier(extractor).floor(
            record["heldout_images"]
        )
        write_json(out / folder_classifier.RECORD_FILE, record, ensure_ascii=False)
    return record
