"""Inference: what a user needs to load and run a trained model, below the application layer
(training, sampling to disk, evaluation, the demo, the app) and above the paradigms.

- :mod:`elt.inference.files`: the files of a checkpoint folder (names, step folders, modes).
- :mod:`elt.inference.checkpoints`: find a checkpoint (run directory, checkpoint directory,
  ``demo:NAME``, the latest complete one past damaged ones), read its config, load its weights,
  :func:`~elt.inference.checkpoints.load_generator`, verify its files.
- :mod:`elt.inference.export`: inference-only checkpoints (``elt export``).
- :mod:`elt.inference.hub`: Hugging Face Hub folders (``elt export --format hub``) and repo ids.
- :mod:`elt.inference.demo_models`: the models shipped in the package (``demo:masked``, ...).

Training imports this package to read what it wrote; nothing here imports :mod:`elt.train`."""
