# The compiled encoder generated from the current .avsc files (schemas/encodegen.py, built by setup.py).
from collections.abc import Callable
from typing import Any

class Unencodable(ValueError): ...

SOURCE_DIGEST: str
ENCODERS: dict[str, Callable[[bytes, dict[str, Any]], bytes]]
