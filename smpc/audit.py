"""Each process's audit log: one JSON object per line, appended as things happen.

Records who connected (name, address), who was refused and why, the model's
fingerprint, what was revealed to whom, refusals and failures. It never holds a
secret value: only names, addresses, shapes, digests and messages.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class AuditLog:
    """Append-only JSON-lines log for one process."""

    def __init__(self, path: Path | None, party: str) -> None:
        self.path, self.party = path, party
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> None:
        """Append one event (thread-safe; a no-op without a path)."""
        if self.path is None:
            return
        line = json.dumps({"time": round(time.time(), 3), "party": self.party, "event": event, **fields})
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every event so far (for tests and tools)."""
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
