"""Converted zoo programs kept between runs.

Converting a model goes through torch.export, whose compiler stack takes a process about
3 s to import: every party and the dealer paid it at every start, for a zoo model whose
program follows from public facts alone (smpc's code, torch's version, the architecture,
the input shape and the batch rows). So the parties that hold no weights and the dealer
keep the program they converted (program_format: the graph and public constants, never a
secret value), and the next run with the same facts reads it in a millisecond.

- Only zoo architectures (`smpc.model.zoo.ARCHITECTURES`, smpc's own code): a
  ``module:factory`` model is the user's code, which may change under the same name.
- The model owner converts from its weights every time and never reads or writes here:
  the conversion computes some of its parameters (BatchNorm folded into the convolution
  before it, as in the digits CNN), which a kept graph would not.
- The key hashes every source file of smpc, so a changed smpc never reads an older entry.
- Where: ``$SMPC_CACHE_DIR/programs``, else ``$XDG_CACHE_HOME/smpc/programs``, else
  ``~/.cache/smpc/programs``; ``SMPC_CACHE_DIR=off`` turns it off. An entry is written
  to a temporary folder and renamed into place (processes starting together do not see
  half an entry); one that cannot be read is converted again and replaced; at most
  `KEEP` entries are kept, the least recently written removed first.
- An entry altered on disk changes the program's architecture fingerprint, which every
  party compares with the model owner's (converted afresh) before anything is shared.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from smpc.errors import ArtifactError
from smpc.model import program_format, zoo
from smpc.model.program import Program

KEEP = 64  # entries; a digits CNN's takes 12 KB, a transformer's public tables more
STAGING = ".writing-"  # an entry being written, renamed into place when complete


def directory() -> Path | None:
    """The cache's folder, or None when SMPC_CACHE_DIR=off."""
    configured = os.environ.get("SMPC_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "false", "no") else Path(configured) / "programs"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smpc" / "programs"


@functools.cache
def _code_digest() -> str:
    # every source file of the smpc package: the converter, the zoo, the program format
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key(architecture: str, rows: int, input_shape: tuple[int, ...]) -> str | None:
    """The entry's name for a zoo architecture's program, or None for other models."""
    if architecture not in zoo.ARCHITECTURES:
        return None
    facts = f"{_code_digest()}|torch {torch.__version__}|{architecture}|{rows}|{tuple(input_shape)}"
    return hashlib.sha256(facts.encode()).hexdigest()[:32]


def load(architecture: str, rows: int, input_shape: tuple[int, ...]) -> Program | None:
    """The kept program (its parameters zeros), or None (not kept, unreadable, or the
    cache is off)."""
    folder, name = directory(), key(architecture, rows, input_shape)
    if folder is None or name is None or not (folder / name).is_dir():
        return None
    try:
        return program_format.load(folder / name)
    except (ArtifactError, OSError):
        return None  # converted again, and the entry replaced


def store(architecture: str, rows: int, input_shape: tuple[int, ...], program: Program) -> None:
    """Keep `program` for later runs (its structure and public constants: program_format
    writes the secret parameters' shapes only); best effort: a cache that cannot be
    written only means the next run converts again."""
    folder, name = directory(), key(architecture, rows, input_shape)
    if folder is None or name is None:
        return
    final = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if final.is_dir():
            try:
                program_format.load(final)
                return  # another process kept it meanwhile
            except ArtifactError:
                shutil.rmtree(final, ignore_errors=True)  # unreadable: replaced
        staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=folder))
        program_format.save(program, staging)
        try:
            staging.rename(final)
        except OSError:  # another process put the same entry in place first
            shutil.rmtree(staging, ignore_errors=True)
        _prune(folder)
    except OSError:
        return


def _prune(folder: Path) -> None:
    # the least recently written entries beyond KEEP, and what a killed process left half-written
    now = time.time()
    entries = []
    for path in folder.iterdir():
        if path.name.startswith(STAGING):
            if now - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir():
            entries.append(path)
    entries.sort(key=lambda p: p.stat().st_mtime)
    for old in entries[: max(0, len(entries) - KEEP)]:
        shutil.rmtree(old, ignore_errors=True)
