"""Builds the compiled parts: the decoder and encoder (``schemas/_decode.pyx`` and ``schemas/_encode.pyx``,
generated from the shipped ``.avsc`` files by ``schemas/codegen.py`` and ``schemas/encodegen.py``, so they
always match the schemas), and the hot path's Python modules compiled as they are (``streams/compiled.py``).
Everything else about the package is declared in pyproject.toml."""

import os
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

# the hot path's modules, compiled from their .py (streams/compiled.py); Cython regenerates a module's C only
# when its source changed, and build_ext recompiles only changed C: `make compiled` after an edit is quick
from streams.compiled import DIRECTIVES, MODULES, built_layouts, source_path  # noqa: E402  (standard library only)

# Cython regenerates C only for a changed source: a changed list or changed directives regenerate it all
_LISTED_AT = (ROOT / "streams" / "compiled.py").stat().st_mtime
for _m in MODULES:
    _c = source_path(_m).with_suffix(".c")
    if _c.exists() and _c.stat().st_mtime < _LISTED_AT:
        _c.unlink()
    elif any(not (ROOT / _pxd).exists() for _pxd in built_layouts(_m, ROOT)):  # generated with a layout since removed
        _c.unlink()

# -O1: the generated C is calls into the interpreter's API, which -O2 does not make faster; it halves the build
extensions += cythonize([Extension(m, [str(source_path(m).relative_to(ROOT))], extra_compile_args=["-O1"])
                         for m in MODULES], compiler_directives=DIRECTIVES, quiet=True)

# The compiled batch engine prototype (prototypes/compiled_engine, not part of the package): built only by
# an in-place build (`setup.py build_ext --inplace`), and optional: if it fails, the rest is built anyway.
OPTIONAL = {"prototypes.compiled_engine._engine"}
if "--inplace" in sys.argv and os.environ.get("SHOPMAIL_BUILD_PROTOTYPE", "1").lower() not in ("0", "false", "no", ""):
    try:
        extensions += cythonize([Extension("prototypes.compiled_engine._engine",
                                           ["prototypes/compiled_engine/_engine.pyx"])],
                                compiler_directives={"language_level": "3"}, quiet=True)
    except Exception as exc:  # noqa: BLE001  (Cython's errors have no common type)
        print(f"warning: the compiled engine prototype was not generated: {exc}", file=sys.stderr)


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux: the CPUs this process may run on
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


class OptionalBuildExt(build_ext):
    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:  # the extensions are independent: one compiler per CPU this process may use
            self.parallel = min(_usable_cpus(), int(os.environ.get("SHOPMAIL_BUILD_JOBS", "4")))

    def build_extensions(self) -> None:
        # the built files name no directory of the machine that built them: debug information names the tree
        # as "." and the interpreter as "python", and the interpreter's run path is left out of the link (an
        # extension module on Linux loads into the interpreter and links no libpython: the path is unused)
        self.compiler.linker_so = [a for a in self.compiler.linker_so if not a.startswith("-Wl,-rpath")]
        prefix_maps = [f"-ffile-prefix-map={ROOT}=.", f"-ffile-prefix-map={Path(sys.base_prefix).resolve()}=python"]
        for ext in self.extensions:
            ext.extra_compile_args = [*ext.extra_compile_args, *prefix_maps]
        super().build_extensions()

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if ext.name not in OPTIONAL:
                raise
            print(f"warning: {ext.name} was not built: {exc}", file=sys.stderr)


# `make` installs the package without extensions and then builds them all once, in place (`make compiled`):
# an editable install's own build is not reused by a later in-place build, which would compile everything twice
if os.environ.get("SHOPMAIL_EXTENSIONS") == "in-place-later":
    extensions = []

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
