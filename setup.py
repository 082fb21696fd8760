"""Builds the compiled decoder: ``schemas/_decode.pyx`` is generated from the shipped ``.avsc`` files
(``schemas/codegen.py``) and compiled with Cython on every install, so it always matches the schemas.
Everything else about the package is declared in pyproject.toml."""

import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from schemas.codegen import generate  # noqa: E402  (standard library only)

PYX = ROOT / "schemas" / "_decode.pyx"
source = generate(ROOT / "schemas")
if not PYX.exists() or PYX.read_text() != source:  # unchanged schemas: Cython's output is reused
    PYX.write_text(source)

setup(ext_modules=cythonize([Extension("schemas._decode", ["schemas/_decode.pyx"])],
                            compiler_directives={"language_level": "3"}, quiet=True))
