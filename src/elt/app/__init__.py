"""``elt app``: a local page to feel the compute dial — pick a model, a class, a seed and a loop
count, and see the sample with what it cost (loops, GFLOPs, measured time); compare loop counts side
by side.

Built on Gradio (the optional ``app`` extra: ``pip install 'elt-looped[app]'``), imported only when
the command runs, so ``import elt``, the CLI and ``elt demo`` never load it. Served from this
machine alone: no network access at run time.

The command line is :mod:`elt.cli.app`; the models are :mod:`elt.app.models`, the page
:mod:`elt.app.page`."""
