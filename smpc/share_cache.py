"""A party's secret shares of the model, kept sealed between runs so the model owner
need not share the weights again.

Each party seals its own shares under its storage key, tagged with the architecture
fingerprint, the party list and a share-set id chosen by the model owner. A later run
reuses them only if every party holds the same set; the owner also checks its weights
are unchanged. Otherwise the weights are shared afresh and the new set is sealed.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from collections.abc import Callable

from smpc import compat  # noqa: F401  (first: it makes crypten importable on this torch)
import crypten
import torch

from smpc import sealed, session
from smpc.model.program import Program


def load_or_share(
    program: Program,
    path: Path,
    key_file: Path,
    names: list[str],
    owner: int,
    weights_digest: str | None,
    record: Callable[..., None] = lambda *a, **k: None,
) -> dict[str, crypten.CrypTensor]:
    """Collective: every party calls it with its own cache file and key.

    Returns the parameters as CrypTensors (reused or freshly shared).
    """
    rank = session.rank()
    key = sealed.load_key(key_file)
    fingerprint = program.architecture_fingerprint()
    cached: dict[str, Any] | None = None
    set_id = -1
    if path.exists():
        tensors, meta = sealed.unseal(path, key)  # a wrong key or an altered file is an error
        fits = meta.get("fingerprint") == fingerprint and meta.get("names") == names and meta.get("rank") == rank
        if rank == owner:
            fits = fits and meta.get("weights_sha256") == weights_digest
        if fits and sorted(tensors) == sorted(program.secret):
            cached, set_id = tensors, int(meta["set_id"])
    ids = [int(t[0]) for t in session.all_gather_int64(torch.tensor([set_id]))]
    if cached is not None and all(i == set_id for i in ids):
        record("shares_reused", set_id=set_id)
        return {name: crypten.mpc.MPCTensor.from_shares(cached[name]) for name in sorted(program.secret)}
    params = session.share_parameters(program, owner)
    new_id = session.broadcast_int(secrets.randbits(62) if rank == owner else None, owner)
    meta = {
        "fingerprint": fingerprint,
        "names": names,
        "rank": rank,
        "set_id": new_id,
        "weights_sha256": weights_digest,
    }
    sealed.seal(path, {name: value._tensor.share for name, value in params.items()}, key, meta)
    record("shares_sealed", set_id=new_id)
    return params
