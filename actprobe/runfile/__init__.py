"""The run file: the HDF5 contract of docs/FORMAT.md, written and read here and nowhere else.

Owns: the format's names (``format``), the single-writer lock (``lock``), creating a file and
committing rows (``storage``), the background writer thread (``writer``) and reading a file back
(``reader``, its statistics on demand: ``lazy``). The only layer that imports h5py (``storage``, and ``reader`` on first use): ``format``
and ``lock`` load without it, and this ``__init__`` imports nothing.

May import: ``actprobe.errors``, ``actprobe._version``, ``actprobe._text``, NumPy, h5py (torch only for
its version string, lazily, in ``storage``). Never the engine, the statistics kernels, analysis,
rendering or the CLI.
"""
