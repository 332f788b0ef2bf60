"""Analysis: judging and comparing runs that were read from run files; no rendering here.

Owns: what kind of layer a site is (``roles``), which rows a view looks at (``rows``), the
per-site summary of ``show`` (``summary``), the rules of ``diagnose`` (``diagnose``) and the site
matching of ``compare`` (``compare``).

May import: NumPy, ``actprobe.errors`` and ``actprobe.runfile`` (the ``Run`` it reads). Never torch,
the engine, rendering (rich, matplotlib) or the CLI.
"""
