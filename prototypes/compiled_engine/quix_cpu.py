"""Runs bench/quix_app.py unchanged, adding the CPU seconds of its process over the same span as the
compiled engine's and the worker's figure: from the Quix ``Application`` being made (clients, state) to
the end of its final commit (``run()`` returned). Runs in the Quix virtualenv (its own interpreter): it
imports nothing from shopmail.

    python quix_cpu.py PATH/TO/quix_app.py BOOTSTRAP PREFIX GROUP EXPECTED SCHEMA_DIR COMMIT_EVERY STATE_DIR

prints quix_app's JSON line, then {"cpu_s": …}.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys


def cpu_s() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    app_path = sys.argv[1]
    spec = importlib.util.spec_from_file_location("quix_app", app_path)
    assert spec is not None and spec.loader is not None
    quix_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quix_app)
    span: dict[str, float] = {}
    base = quix_app.Application

    class Timed(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            span["start"] = cpu_s()
            super().__init__(*args, **kwargs)

        def run(self, *args: object, **kwargs: object) -> None:
            super().run(*args, **kwargs)
            span["end"] = cpu_s()

    quix_app.Application = Timed
    sys.argv = [app_path, *sys.argv[2:]]
    quix_app.main()
    print(json.dumps({"cpu_s": round(span["end"] - span["start"], 3)}))


if __name__ == "__main__":
    main()
