"""Builds the optional C kernel (actprobe/stats/_cstats.c); all other metadata lives in pyproject.toml.

The extension is optional: without a C compiler actprobe installs and uses its torch kernel.
"""

from setuptools import Extension, setup

CFLAGS = ["-O3", "-ffast-math", "-fno-finite-math-only", "-funroll-loops", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "actprobe.stats._cstats",
            ["actprobe/stats/_cstats.c"],
            # -ffast-math lets the compiler vectorise the reductions; -fno-finite-math-only keeps it from
            # assuming that no value is NaN or ±Inf, which would let it fold the kernel's finiteness tests
            # away (clang does: it then counts NaN as values and reports no non-finite one)
            extra_compile_args=CFLAGS,
            optional=True,
        )
    ]
)
