"""The suite's own program cache (smpc.model.program_cache): the runs it starts keep
their converted programs in a folder of the session, never in the user's home."""

from __future__ import annotations

import os
import shutil
import tempfile

_made: list[str] = []


def pytest_configure(config) -> None:
    _made.append(tempfile.mkdtemp(prefix="smpc-test-cache-"))
    os.environ["SMPC_CACHE_DIR"] = _made[-1]  # inherited by every process a test starts


def pytest_unconfigure(config) -> None:
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)
