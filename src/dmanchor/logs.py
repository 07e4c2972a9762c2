"""Node logs: readable text, or one JSON object per line (``log_format = "json"``).

A JSON line carries the time (UTC, ISO 8601), the level, the node, the
function (from the logger: ``anchor``, ``controller``, ``lms`` ...), the
message, and - where the call site knows them - the MN, the prefix and the
draft label (``FM:6-1`` ...), given as ``extra={"mn": ..., "prefix": ...,
"label": ...}``.  A log shipper can then select every line about one MN or
one procedure without parsing prose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FORMATS = ("text", "json")
"""``log_format`` values."""
FIELDS = ("mn", "prefix", "label")
"""Optional per-line fields a call site may pass as ``extra``."""
FUNCTIONS = {"dmanchor.node": "node", "dmanchor.lm": "lms", "dmanchor.access": "access",
             "dmanchor.fm": "fm", "dmanchor.dataplane": "dataplane",
             "dmanchor.transport": "transport", "dmanchor.mn": "mn"}
"""Logger name prefix -> function (the longest prefix that matches)."""


def function_of(logger: str) -> str:
    """The function a logger speaks for."""
    best = max((p for p in FUNCTIONS if logger == p or logger.startswith(p + ".")),
               key=len, default=None)
    return FUNCTIONS[best] if best is not None else logger


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node,
            "function": getattr(record, "function", None) or function_of(record.name),
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = [str(v) for v in value] if isinstance(value, list | tuple) \
                    else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup(level: str, fmt: str, node: str) -> None:
    """Configure the root logger of a node process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
