"""Builds the optional C kernel (actprobe/stats/_cstats.c); all other metadata lives in pyproject.toml.

The extension is optional: without a C compiler actprobe installs and uses its torch kernel.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "actprobe.stats._cstats",
            ["actprobe/stats/_cstats.c"],
            extra_compile_args=["-O3", "-ffast-math", "-funroll-loops", "-std=c11"],
            optional=True,
        )
    ]
)
