"""Build the optional Cython codec (fastq/_speedups.pyx).

* ``FASTQ_NO_EXTENSIONS=1`` (or a non-CPython interpreter) builds a pure-Python
  package (a ``py3-none-any`` wheel); the pure codec in fastq/_speedups_py.py is
  then used at import time.
* By default the extension is compiled; if that fails (no C compiler, no Python
  headers) the build prints why and falls back to a pure-Python package, so an
  sdist still installs anywhere. fastq then warns once at import time
  (``fastq._codec.SpeedupsWarning``) and says how to get the fast path.
* ``FASTQ_REQUIRE_EXTENSIONS=1`` turns that fallback into a build failure: the
  release wheel builds (cibuildwheel, scripts/wheel-check.sh) set it, so a broken
  compiler can never ship a slow wheel silently.
"""
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("FASTQ_NO_EXTENSIONS")) or platform.python_implementation() != "CPython"
REQUIRE_EXTENSIONS = bool(os.environ.get("FASTQ_REQUIRE_EXTENSIONS"))


class BuildFailed(Exception):
    pass


class optional_build_ext(build_ext):
    """Turns any compiler error into BuildFailed, so setup() can be rerun without extensions."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types (PlatformError, CCompilerError, ...)
            raise BuildFailed(exc) from exc

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise BuildFailed(exc) from exc


def banner(text):
    print(f"*** fastq: {text} ***", file=sys.stderr)


def extensions():
    from Cython.Build import cythonize

    return cythonize(
        [Extension("fastq._speedups", ["fastq/_speedups.pyx"],
                   extra_compile_args=["-O3", "-g0"] if os.name != "nt" else [])],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True, "embedsignature": True},
    )


if NO_EXTENSIONS:
    if REQUIRE_EXTENSIONS:
        sys.exit("fastq: FASTQ_REQUIRE_EXTENSIONS is set but this is a pure build "
                 "(FASTQ_NO_EXTENSIONS set or not CPython)")
    banner("pure Python build (FASTQ_NO_EXTENSIONS set or not CPython)")
    setup()
elif REQUIRE_EXTENSIONS:
    banner("accelerated build (Cython codec), required")
    setup(ext_modules=extensions())
else:
    banner("accelerated build (Cython codec)")
    try:
        setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
    except BuildFailed as exc:
        banner(f"could not compile the Cython codec ({exc.__cause__ or exc}); building a pure Python package "
               "instead. fastq works, with a slower codec, and warns at import. For the fast path install a C "
               "compiler and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev) and reinstall")
        setup()
