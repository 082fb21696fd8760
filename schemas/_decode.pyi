# The compiled decoder generated from the .avsc files (schemas/codegen.py, built by setup.py).
from collections.abc import Callable
from typing import Any

class Unreadable(ValueError): ...

SOURCE_DIGEST: str
DECODERS: dict[str, Callable[[bytes, int], dict[str, Any]]]
