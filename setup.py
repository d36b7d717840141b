"""Build the optional Cython core; fall back to the pure-Python package when it can't be built.

``ZZZ_NO_EXTENSIONS=1`` at build time skips the extension on purpose.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _wanted() -> bool:
    return os.environ.get("ZZZ_NO_EXTENSIONS", "").strip().lower() not in {"1", "true", "yes", "on"}


class OptionalBuildExt(build_ext):
    """Compile the extension, but install the pure-Python package (and say so) if that fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no Cython: the twin takes over
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    @staticmethod
    def _fallback(exc):
        sys.stderr.write(
            f"zzz: the C extension could not be built ({exc}); installing the pure-Python core.\n"
        )


def _extensions():
    if not _wanted():
        sys.stderr.write("zzz: ZZZ_NO_EXTENSIONS is set; installing the pure-Python core.\n")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("zzz: Cython is not installed; installing the pure-Python core.\n")
        return []
    ext = Extension(
        "zzz._speedups",
        ["zzz/_speedups.pyx"],
        # The C kernels live in headers; listing them rebuilds on change and ships them in sdists.
        depends=["zzz/_mask.h", "zzz/_utf8.h"],
        include_dirs=["zzz"],
        # No -march=native: the wheel must run on any x86-64; SIMD is picked at run time.
        extra_compile_args=["-O3"] if os.name != "nt" else ["/O2"],
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    # Generated C and the kernels' headers are build inputs (kept in sdists), not wheel contents.
    exclude_package_data={"zzz": ["*.c", "*.h"]},
)
