"""Build the Cython extensions of leashed.

Every ``*.pyx`` file in the card's folders is compiled as ``leashed.<package>.<name>``
(the folder ``models/`` is the import package ``leashed.models``, see pyproject.toml).
Set ``LEASHED_BUILD_ONLY=models,runtime`` to compile a subset while developing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
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
        if not link.is_symlink():
            if link.exists():
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

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=[cython_include_tree()],
        nthreads=int(os.environ.get("LEASHED_BUILD_JOBS", "0")) or None,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False, "embedsignature": True},
    ),
)
