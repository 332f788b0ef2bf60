"""Builds the optional C extensions (actprobe/stats/_cstats.c: the CPU kernel, the hooks in C, and with _cstate.c the
recording state as C fields and the end of a recorded step; actprobe/stats/_cmerge.c:
merging partials into rows on the CPU; actprobe/stats/_chist.c: histograms on the CPU); all other
metadata lives in pyproject.toml.

Both are optional: without a C compiler actprobe installs and uses torch operations instead.
"""

from setuptools import Extension, setup

CFLAGS = ["-O3", "-ffast-math", "-funroll-loops", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "actprobe.stats._cstats",
            ["actprobe/stats/_cstats.c", "actprobe/stats/_cstate.c"],
            depends=["actprobe/stats/_cstate.h"],
            # -ffast-math lets the compiler vectorise the reductions (min and max too); it also lets it
            # assume that no floating-point value is NaN or Inf, so _cstats.c tests finiteness on
            # integers only (tests/stats/test_compilers.py builds it with GCC and with clang)
            extra_compile_args=CFLAGS,
            optional=True,
        ),
        # IEEE arithmetic (no -ffast-math): the partials it merges carry NaN and Inf
        Extension("actprobe.stats._cmerge", ["actprobe/stats/_cmerge.c"], extra_compile_args=["-O3", "-std=c11"],
                  optional=True),
        Extension("actprobe.stats._chist", ["actprobe/stats/_chist.c"], extra_compile_args=["-O3", "-std=c11"],
                  optional=True),
    ]
)
