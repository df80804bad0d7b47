"""Figures of a reliability run: printed, and appended as JSON lines to $RELIABILITY_REPORT."""

from __future__ import annotations

import json
import os
from typing import Any


def record(test: str, **figures: Any) -> None:
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"RELIABILITY {line}")
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
