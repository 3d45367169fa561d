"""Builds the C library (csrc/) into the wheel as sparkv/libsparkv.so, next to the ctypes binding
(_lib.py looks there before anywhere else). The wheel is therefore tagged for its platform, and
`pip install ./python` needs a C compiler with OpenMP (gcc's libgomp) but no `make` and no
environment variable.

The C sources live at the repository root (csrc/, include/). Building from a checkout copies them
into python/_c/ first, so an sdist made here carries them too (MANIFEST.in)."""

import glob
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
VENDORED = os.path.join(HERE, "_c")


def vendor_c_sources() -> None:
    """Refresh python/_c from the checkout (no-op in an unpacked sdist, which has only _c/)."""
    root = os.path.dirname(HERE)
    if not os.path.isfile(os.path.join(root, "include", "sparkv.h")):
        return
    shutil.rmtree(VENDORED, ignore_errors=True)
    # csrc/ keeps its folders (platform, core, storage, pipeline, attention)
    for sub, patterns in (("csrc", ("*/*.c", "*/*.h")), ("include", ("*.h",))):
        for pattern in patterns:
            for path in glob.glob(os.path.join(root, sub, pattern)):
                dest = os.path.join(VENDORED, sub, os.path.relpath(os.path.dirname(path), os.path.join(root, sub)))
                os.makedirs(dest, exist_ok=True)
                shutil.copy2(path, dest)


class BuildSharedLibrary(build_ext):
    """Names the output sparkv/libsparkv.so: a plain shared library that ctypes loads, not a
    Python extension module (it has no PyInit_ function and needs none)."""

    def get_ext_filename(self, ext_name: str) -> str:
        return os.path.join(*ext_name.split(".")[:-1], "libsparkv.so")

    def get_export_symbols(self, ext):  # the library exports its own sparkv_* functions
        return []


vendor_c_sources()
sources = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(VENDORED, "csrc", "*", "*.c")))
csrc_folders = sorted({os.path.relpath(os.path.dirname(os.path.join(HERE, p)), HERE) for p in sources})
if not sources:
    raise SystemExit("sparkv: no C sources found (expected ../csrc in a checkout, or _c/csrc in an sdist)")

setup(
    ext_modules=[
        Extension(
            "sparkv.libsparkv",
            sources=sources,
            include_dirs=[os.path.join("_c", "include")] + csrc_folders,
            # The flags of the Makefile's library build: no FMA contraction (results independent of
            # the compiler), hidden internals, OpenMP.
            extra_compile_args=["-std=c11", "-O3", "-fvisibility=hidden", "-ffp-contract=off", "-fopenmp"],
            extra_link_args=["-fopenmp", "-lm"],
        )
    ],
    cmdclass={"build_ext": BuildSharedLibrary},
)
