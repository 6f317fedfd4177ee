"""Evaluation: feature extractors, metrics, and sweeps over loop counts. :mod:`elt.eval.run` is
the Python API behind ``elt eval`` (sweep, merge, floor, classifier training),
:func:`elt.eval.video.evaluate_videos` behind ``elt eval video`` and
:func:`elt.eval.calibrate.calibrate_checkpoint` behind ``elt calibrate``."""
