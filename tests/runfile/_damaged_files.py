"""A corpus of damaged and hostile run files, each made from a good one with plain h5py.

    python _damaged_files.py GOOD.h5 DIR                # writes DIR/<case>.h5 for every case below
    python _damaged_files.py --check GOOD.h5 DIR MiB    # under a memory cap of MiB: every command on
                                                        # every file, one JSON line each

Every case breaks docs/FORMAT.md in one way: columns of the wrong length, rank, dtype or kind,
links, sizes declared far beyond the file, a decompression bomb, huge fixed-length strings.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

STATS = ("count", "mean", "std", "min", "max", "near_zero", "dead", "nonfinite")


def _replace(f: h5py.File, name: str, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, **kwargs)


def _resize(name: str, rows: int) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        data = f[name][()]
        _replace(f, name, data=data[:rows] if rows <= len(data) else np.resize(data, (rows, *data.shape[1:])))
    return edit


def _dtype(name: str, data: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        _replace(f, name, data=data(f[name][()]))
    return edit


def _group_instead(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_group(name)
    return edit


def _declared(name: str, shape: tuple[int, ...], dtype: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, shape=shape, maxshape=(None,) * len(shape), dtype=dtype,
                         chunks=(1024,) + shape[1:])
    return edit


def _soft_loop(f: h5py.File) -> None:
    del f["stats"]["mean"]
    f["stats"]["mean"] = h5py.SoftLink("/stats/loop")
    f["stats"]["loop"] = h5py.SoftLink("/stats/mean")


def _external(f: h5py.File) -> None:
    del f["step"]
    f["step"] = h5py.ExternalLink("/etc/passwd", "/x")


def _gzip_bomb(f: h5py.File) -> None:
    group = f.require_group("epochs")
    group.create_dataset("val_loss", shape=(1 << 27,), dtype="f8", chunks=(1 << 20,), compression="gzip",
                         fillvalue=0.0)
    group["val_loss"][:] = 0.0


def _huge_strings(f: h5py.File) -> None:
    count = len(f["sites"])
    del f["sites"]
    f.create_dataset("sites", shape=(count,), dtype=h5py.string_dtype("utf-8", length=1 << 30))


def _attribute(key: str, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[key] = value
    return edit


CASES: dict[str, Callable[[h5py.File], None]] = {
    "step-longer-than-stats": _dtype("step", lambda d: np.arange(40)),
    "time-shorter": _resize("time", 2),
    "scalar-shorter": _resize("scalars/loss", 1),
    "step-2d": _dtype("step", lambda d: d[:, None]),
    "step-strings": _dtype("step", lambda d: np.array([str(v).encode() for v in d])),
    "step-floats-nan": _dtype("step", lambda d: np.full(len(d), np.nan)),
    "step-compound": _dtype("step", lambda d: np.array([(v, v) for v in d], dtype=[("a", "i8"), ("b", "i8")])),
    "step-group": _group_instead("step"),
    "step-missing": lambda f: f.__delitem__("step"),
    "step-2-to-40-rows": _declared("step", (1 << 40,), "i8"),
    "step-external-link": _external,
    "time-group": _group_instead("time"),
    "time-strings": _dtype("time", lambda d: np.array([b"x"] * len(d))),
    "sites-integers": _dtype("sites", lambda d: np.arange(len(d))),
    "sites-2d": _dtype("sites", lambda d: np.stack([d, d], axis=1)),
    "sites-fewer-than-columns": _dtype("sites", lambda d: d[:-1]),
    "sites-group": _group_instead("sites"),
    "sites-1GiB-strings": _huge_strings,
    "module-types-short": _dtype("site_module_type", lambda d: d[:1]),
    "unit-dims-short": _dtype("site_unit_dim", lambda d: d[:1]),
    "unit-dims-strings": _dtype("site_unit_dim", lambda d: np.array([b"x"] * len(d))),
    "stats-group-missing": lambda f: f.__delitem__("stats"),
    "stats-soft-link-loop": _soft_loop,
    "scalars-missing": lambda f: f.__delitem__("scalars"),
    "scalars-is-dataset": lambda f: (f.__delitem__("scalars"), f.create_dataset("scalars", data=[1.0])),
    "scalar-strings": _dtype("scalars/loss", lambda d: np.array([b"x"] * len(d))),
    "scalar-2d": _dtype("scalars/loss", lambda d: d[:, None]),
    "epochs-gzip-bomb": _gzip_bomb,
    "epochs-strings": lambda f: f.create_group("epochs").create_dataset("val_loss", data=[b"a", b"b"]),
    "epochs-2d": lambda f: f.create_group("epochs").create_dataset("val_loss", data=np.zeros((2, 2))),
    "epochs-is-dataset": lambda f: f.create_dataset("epochs", data=[1, 2]),
    "format-version-string": _attribute("format_version", "one"),
    "format-version-bool": _attribute("format_version", True),
    "format-version-99": _attribute("format_version", 99),
    "format-version-negative": _attribute("format_version", -3),
    "format-wrong": _attribute("format", "other"),
    "attribute-2MB": _attribute("big", np.zeros(1 << 18)),
}
for _name in STATS:
    CASES[f"stats-{_name}-wrong-columns"] = _dtype(f"stats/{_name}", lambda d: d[:, :-1])
CASES["stats-mean-1d"] = _dtype("stats/mean", lambda d: d[:, 0])
CASES["stats-std-3d"] = _dtype("stats/std", lambda d: d[:, :, None])
CASES["stats-min-strings"] = _dtype("stats/min", lambda d: np.full(d.shape, b"x"))
CASES["stats-max-integers"] = _dtype("stats/max", lambda d: d.astype(np.int64))
CASES["stats-dead-shorter"] = _resize("stats/dead", 1)
CASES["stats-count-2-to-40-rows"] = _declared("stats/count", (1 << 40, 1), "f4")


def make_all(good: Path, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, edit in CASES.items():
        path = folder / f"{name}.h5"
        shutil.copyfile(good, path)
        with h5py.File(path, "r+") as f:
            edit(f)
        written.append(path)
    return written


def check(good: Path, folder: Path, cap_mib: int) -> None:
    """Run show, info, compare, diagnose, plot and actprobe.read on every file of ``folder``, with the
    address space capped at ``cap_mib``; print what each did as one JSON line."""
    import json
    import resource
    import time

    resource.setrlimit(resource.RLIMIT_AS, (cap_mib << 20, cap_mib << 20))
    from typer.testing import CliRunner

    import actprobe
    from actprobe.cli import app

    runner = CliRunner()
    for path in sorted(folder.glob("*.h5")):
        commands = {"show": ["show", str(path)], "info": ["info", str(path)],
                    "compare": ["compare", str(good), str(path)], "diagnose": ["diagnose", str(path)],
                    "plot": ["plot", str(path), "--out", str(folder / "figures")]}
        for command, args in commands.items():
            start = time.perf_counter()
            result = runner.invoke(app, args)
            print(json.dumps({"file": path.name, "command": command, "code": result.exit_code,
                              "stderr": result.stderr, "stdout": result.stdout[-500:],
                              "exception": repr(result.exception) if result.exit_code not in (0, 1, 2) else None,
                              "seconds": time.perf_counter() - start}), flush=True)
        start = time.perf_counter()
        try:
            actprobe.read(path)
            outcome = "read"
        except actprobe.FormatError as exc:
            outcome = f"FormatError: {exc}"
        except BaseException as exc:  # noqa: BLE001 — reported to the test
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"file": path.name, "command": "read", "outcome": outcome,
                          "seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        make_all(Path(sys.argv[1]), Path(sys.argv[2]))
