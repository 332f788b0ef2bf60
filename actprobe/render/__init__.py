"""Rendering: what a person sees — rich tables in the terminal, the progress display, PNG figures.

Owns: the run summary of ``show`` and ``run`` (``summary``), the ``compare`` table
(``compare``), the ``diagnose`` findings and their JSON (``diagnose``), recipe tables
(``tables``), the one progress display (``progress``) and every matplotlib figure (``figures``,
Agg backend: files, never windows). Computes nothing that a view judges: that is ``analysis``.

May import: rich, matplotlib, NumPy, ``actprobe.analysis`` and ``actprobe.runfile`` (the ``Run`` it
draws). Never torch, the engine, the recipes or the CLI. The only layer besides the CLI that
imports rich, and the only one that imports matplotlib.
"""
