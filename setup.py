"""Build the optional Cython extensions; fall back to the pure-Python package when they can't be built.

Three extensions: ``zzz._speedups`` (the byte core, from ``_speedups.pyx``), ``zzz._readloop_c``
(the per-read loop, compiled from the same ``_readloop.py`` the twin runs) and
``zzz.channels._wire_c`` (the channel wire format's usual frames). All or none: if one fails,
the others are not installed either, so a wheel never pairs a compiled core with a
missing loop. ``ZZZ_NO_EXTENSIONS=1`` at build time skips them on purpose.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _wanted() -> bool:
    return os.environ.get("ZZZ_NO_EXTENSIONS", "").strip().lower() not in {"1", "true", "yes", "on"}


class OptionalBuildExt(build_ext):
    """Compile the extensions, but install the pure-Python package (and say so) if one fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler, no Cython: the twin takes over
            self._fallback(exc)

    def build_extensions(self):
        built = []
        for ext in self.extensions:
            try:
                self.build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the twin takes over
                # All or none: drop what was built, so nothing installs a half-compiled zzz.
                for done in built:
                    path = self.get_ext_fullpath(done.name)
                    if os.path.exists(path):
                        os.remove(path)
                self.extensions = []
                self._fallback(exc)
                return
            built.append(ext)

    @staticmethod
    def _fallback(exc):
        sys.stderr.write(
            f"zzz: the C extension could not be built ({exc}); installing the pure-Python core.\n"
        )


_OPTIMIZE = ["-O3"] if os.name != "nt" else ["/O2"]


def _extensions():
    if not _wanted():
        sys.stderr.write("zzz: ZZZ_NO_EXTENSIONS is set; installing the pure-Python core.\n")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("zzz: Cython is not installed; installing the pure-Python core.\n")
        return []
    directives = {
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
    }
    core = Extension(
        "zzz._speedups",
        ["zzz/_speedups.pyx"],
        # The C kernels live in headers; listing them rebuilds on change and ships them in sdists.
        depends=["zzz/_mask.h", "zzz/_utf8.h", "zzz/_ustr.h", "zzz/_speedups.pxd"],
        include_dirs=["zzz"],
        # No -march=native: the wheel must run on any x86-64; SIMD is picked at run time.
        extra_compile_args=_OPTIMIZE,
    )
    # The per-read loop: the same text the twin runs, compiled as its own module and typed by
    # zzz/_readloop_c.pxd (Cython finds a .pxd by the name of the module it builds).
    readloop = Extension(
        "zzz._readloop_c",
        ["zzz/_readloop.py"],
        depends=["zzz/_readloop_c.pxd", "zzz/_speedups.pxd"],
        extra_compile_args=_OPTIMIZE,
    )
    # The channel wire format's usual frames (zzz/channels/wire.py is the reference and the twin).
    wire = Extension(
        "zzz.channels._wire_c",
        ["zzz/channels/_wire_c.pyx"],
        depends=["zzz/channels/_wire.h", "zzz/_ustr.h"],
        include_dirs=["zzz", "zzz/channels"],
        extra_compile_args=_OPTIMIZE,
    )
    # Cython decides whether to regenerate a module's C from the .pxd named like its source
    # (_readloop.pxd, which does not exist), so a change to _readloop_c.pxd or to the _speedups.pxd
    # it cimports would leave a C file built against the old layouts (a "size changed" warning at
    # import, or worse): such a C file is removed, to be generated again.
    generated = os.path.join("zzz", "_readloop.c")
    if os.path.exists(generated) and any(
        os.path.getmtime(dep) > os.path.getmtime(generated) for dep in readloop.depends
    ):
        os.remove(generated)
    return cythonize([core, readloop, wire], compiler_directives=directives)


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    # Generated C and the kernels' headers are build inputs (kept in sdists), not wheel contents.
    exclude_package_data={"zzz": ["*.c", "*.h"], "zzz.channels": ["*.c", "*.h"]},
)
