"""Statistics kernels: the moments of one activation tensor on its own device, and their merging.

Owns: the packed per-tensor results (``arena``), how a tensor is viewed (``plan``), one class per
backend (``c_backend``, ``torch_backend``, ``triton_backend`` with ``triton_kernel``), the choice
between them (``dispatch``), the batched merge of a step's partials into rows (``merge``), the
one-tensor convenience ``single.tensor_statistics`` and the float64 reference (``reference``).

May import: torch, NumPy, ``actprobe.errors`` and ``actprobe.runfile.format`` (the statistics' names
and order). Never the engine, h5py, analysis, rendering or the CLI.
"""
