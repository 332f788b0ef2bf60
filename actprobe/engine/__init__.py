"""The hook engine: what a ``Probe`` attaches to a model and how module calls become rows.

Owns: the public ``Probe`` and its failure policy (``probe``), its validated options
(``settings``), which modules are hooked (``selection``), the forward hooks (``hooks``: attached on
recorded steps only), the layer graph traced in the first recorded step (``graph``), site
naming and unit layout (``sites``), per-step partials merged into rows (``recorder``), their
asynchronous trip to the host (``staging``), the ``step()`` scalars (``scalars``) and the run
file a probe writes (``sink``).

May import: torch, NumPy, ``actprobe.errors``, ``actprobe._checks``, ``actprobe.stats`` and
``actprobe.runfile``. Never h5py directly, analysis, rendering (rich, matplotlib) or the CLI.
"""
