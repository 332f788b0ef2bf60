"""Builds the optional C kernel (actprobe/stats/_cstats.c); all other metadata lives in pyproject.toml.

The extension is optional: without a C compiler actprobe installs and uses its torch kernel.
"""

from setuptools import Extension, setup

CFLAGS = ["-O3", "-ffast-math", "-funroll-loops", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "actprobe.stats._cstats",
            ["actprobe/stats/_cstats.c"],
            # -ffast-math lets the compiler vectorise the reductions (min and max too); it also lets it
            # assume that no floating-point value is NaN or Inf, so _cstats.c tests finiteness on
            # integers only (tests/stats/test_compilers.py builds it with GCC and with clang)
            extra_compile_args=CFLAGS,
            optional=True,
        )
    ]
)
