"""Builds the compiled decoder and encoder: ``schemas/_decode.pyx`` and ``schemas/_encode.pyx`` are generated
from the shipped ``.avsc`` files (``schemas/codegen.py``, ``schemas/encodegen.py``) and compiled with Cython
on every install, so they always match the schemas.
Everything else about the package is declared in pyproject.toml."""

import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from schemas.codegen import generate  # noqa: E402  (standard library only)

PYX = ROOT / "schemas" / "_decode.pyx"
source = generate(ROOT / "schemas")
if not PYX.exists() or PYX.read_text() != source:  # unchanged schemas: Cython's output is reused
    PYX.write_text(source)

# the compiled encoder of the current contracts (schemas/encodegen.py), generated the same way
from schemas.encodegen import generate as generate_encoder  # noqa: E402

ENCODE_PYX = ROOT / "schemas" / "_encode.pyx"
encoder_source = generate_encoder(ROOT / "schemas")
if not ENCODE_PYX.exists() or ENCODE_PYX.read_text() != encoder_source:
    ENCODE_PYX.write_text(encoder_source)

extensions = cythonize([Extension("schemas._decode", ["schemas/_decode.pyx"]),
                        Extension("schemas._encode", ["schemas/_encode.pyx"])],
                       compiler_directives={"language_level": "3"}, quiet=True)

# The compiled batch engine prototype (prototypes/compiled_engine, not part of the package): built only by
# an in-place build (`setup.py build_ext --inplace`), and optional: if it fails, the rest is built anyway.
OPTIONAL = {"prototypes.compiled_engine._engine"}
if "--inplace" in sys.argv:
    try:
        extensions += cythonize([Extension("prototypes.compiled_engine._engine",
                                           ["prototypes/compiled_engine/_engine.pyx"])],
                                compiler_directives={"language_level": "3"}, quiet=True)
    except Exception as exc:  # noqa: BLE001  (Cython's errors have no common type)
        print(f"warning: the compiled engine prototype was not generated: {exc}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if ext.name not in OPTIONAL:
                raise
            print(f"warning: {ext.name} was not built: {exc}", file=sys.stderr)


setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
