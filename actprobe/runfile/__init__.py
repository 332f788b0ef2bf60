"""The run file: the HDF5 contract of docs/FORMAT.md, written and read here and nowhere else.

Owns: the format's names (``format``), the single-writer lock (``lock``), creating a file and
committing rows (``storage``), the background writer thread (``writer``) and reading a file back
(``reader``). The only layer that imports h5py, and it does so lazily: ``format`` and ``lock``
load without it.

May import: ``actprobe.errors``, ``actprobe._version``, ``actprobe._text``, NumPy, h5py. Never the engine,
the statistics kernels, analysis, rendering or the CLI.
"""
