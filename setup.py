"""The compiled part of sparsebert: the sparse kernels (C, AVX2 and AVX-512 chosen at run time, OpenMP). Everything else is in pyproject.toml.

`optional=True`: where no C compiler is found the install still succeeds and the engine falls back to its
numba kernel (slower), saying so.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "sparsebert.sparse._spmm",
    sources=["src/sparsebert/sparse/_spmm.c"],
    extra_compile_args=["-O3", "-fopenmp", "-std=gnu11"],
    extra_link_args=["-fopenmp"],
    optional=True,
)])
