"""Build the Cython extensions of leashed.

Every ``*.pyx`` file in the card's folders is compiled as ``leashed.<package>.<name>``
(the folder ``models/`` is the import package ``leashed.models``, see pyproject.toml).
Set ``LEASHED_BUILD_ONLY=models,runtime`` to compile a subset while developing.

``LEASHED_REUSE_INPLACE=1`` makes a wheel build (``pip wheel . --no-build-isolation``) copy an extension
already built in place (``build_ext --inplace``, or the editable install of ``.ci/install``) instead of
compiling it again, where that file is newer than its ``.pyx`` and every ``.pxd``/``.h`` of the four
folders; tests/test_wheel.py uses it so that the wheel test takes seconds instead of minutes.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent  # absolute: pip's build backends may give a relative __file__
PACKAGES = {"models": "leashed.models", "runtime": "leashed.runtime", "sim": "leashed.sim",
            "analysis": "leashed.analysis"}
only = {p for p in os.environ.get("LEASHED_BUILD_ONLY", "").split(",") if p}


def cython_include_tree() -> str:
    """A tree ``leashed/<package>`` of links to the card's folders, so that Cython finds ``.pxd`` files
    under their import names (``cimport leashed.models._kernels``) despite the package_dir mapping."""
    top = ROOT / "build" / "cython_include" / "leashed"
    top.mkdir(parents=True, exist_ok=True)
    (top / "__init__.py").touch()
    for folder in PACKAGES:
        link = top / folder
        if not (link.is_symlink() and link.resolve() == (ROOT / folder).resolve()):
            if link.is_symlink() or link.exists():  # a stale or broken link (another checkout, relative)
                link.unlink()
            link.symlink_to(ROOT / folder, target_is_directory=True)
    return str(top.parent)


extensions = []
for folder, package in PACKAGES.items():
    if only and folder not in only:
        continue
    for pyx in sorted((ROOT / folder).glob("*.pyx")):
        extensions.append(
            Extension(
                f"{package}.{pyx.stem}",
                [f"{folder}/{pyx.name}"],
                include_dirs=[np.get_include(), folder, "models", "runtime"],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3", "-std=gnu11", "-Wno-unused-function", "-Wno-unreachable-code"],
                extra_link_args=["-pthread"],
            )
        )



class ReusingBuildExt(build_ext):
    """build_ext that, with ``LEASHED_REUSE_INPLACE=1``, copies an up-to-date in-place build (module
    docstring) instead of compiling."""

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("LEASHED_REUSE_INPLACE") == "1" and not self.inplace:
            package, _, stem = ext.name.rpartition(".")
            folder = ROOT / next(f for f, p in PACKAGES.items() if p == package)
            built = folder / (stem + sysconfig.get_config_var("EXT_SUFFIX"))
            sources = [folder / f"{stem}.pyx", *(p for f in PACKAGES for e in ("*.pxd", "*.h")
                                                 for p in (ROOT / f).glob(e))]
            if built.is_file() and built.stat().st_mtime > max(s.stat().st_mtime for s in sources):
                target = Path(self.get_ext_fullpath(ext.name))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(built, target)
                print(f"reusing in-place build {built.relative_to(ROOT)}")
                return
        super().build_extension(ext)


setup(
    cmdclass={"build_ext": ReusingBuildExt},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=[cython_include_tree()],
        nthreads=int(os.environ.get("LEASHED_BUILD_JOBS", "0")) or None,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False, "embedsignature": True},
    ),
)
