"""Build the optional Cython codec (fastq/_speedups.pyx).

FASTQ_NO_EXTENSIONS=1 (or a non-CPython interpreter) builds a pure-Python
package; the pure codec in fastq/_speedups_py.py is then used at import time.
"""
import os
import platform
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("FASTQ_NO_EXTENSIONS")) or platform.python_implementation() != "CPython"

if NO_EXTENSIONS:
    print("*** fastq: pure Python build (FASTQ_NO_EXTENSIONS set or not CPython) ***", file=sys.stderr)
    setup()
else:
    from Cython.Build import cythonize

    extensions = [
        Extension(
            "fastq._speedups",
            ["fastq/_speedups.pyx"],
            extra_compile_args=["-O3"] if os.name != "nt" else [],
        )
    ]
    print("*** fastq: accelerated build (Cython codec) ***", file=sys.stderr)
    setup(
        ext_modules=cythonize(
            extensions,
            language_level=3,
            compiler_directives={
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "embedsignature": True,
            },
        )
    )
