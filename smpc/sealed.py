"""Secret material at rest: tensors sealed with AES-256-GCM under a key only their party holds.

File layout: magic "SMPCSEAL" | version u8 | metadata length u32 | metadata (JSON) |
nonce (12 bytes) | ciphertext with its 16-byte tag. The plaintext is a safetensors
blob; everything before the nonce (the metadata included) is authenticated as
associated data, so neither the contents nor the description can be altered unseen.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from smpc.errors import ArtifactError

MAGIC = b"SMPCSEAL"
VERSION = 1
_PREFIX = struct.Struct("<8sBI")
KEY_BYTES = 32


def create_key(path: Path) -> None:
    """A new random AES-256 key file, mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))


def load_key(path: Path) -> bytes:
    """Read a key file; refuses one of the wrong size or readable by others."""
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: storage key not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ArtifactError(f"{path}: storage key is accessible to other users (chmod 600 it)")
    if len(key) != KEY_BYTES:
        raise ArtifactError(f"{path}: storage key must be {KEY_BYTES} bytes, found {len(key)}")
    return key


def seal(path: Path, tensors: dict[str, torch.Tensor], key: bytes, metadata: dict[str, Any]) -> None:
    """Encrypt `tensors` to `path` (written atomically, mode 0600)."""
    meta = json.dumps(metadata, sort_keys=True).encode()
    header = _PREFIX.pack(MAGIC, VERSION, len(meta)) + meta
    nonce = secrets.token_bytes(12)
    blob = st_save({k: v.contiguous() for k, v in tensors.items()})
    ciphertext = AESGCM(key).encrypt(nonce, blob, header)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(header + nonce + ciphertext)
    os.replace(tmp, path)


def unseal(path: Path, key: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Decrypt a sealed file; returns (tensors, metadata). Raises ArtifactError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: sealed file not found") from None
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise ArtifactError(f"{path}: not a sealed smpc file")
    _, version, meta_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise ArtifactError(f"{path}: sealed format version {version}, expected {VERSION}")
    end = _PREFIX.size + meta_len
    if len(data) < end + 12 + 16:
        raise ArtifactError(f"{path}: truncated sealed file")
    header, nonce, ciphertext = data[:end], data[end : end + 12], data[end + 12 :]
    try:
        blob = AESGCM(key).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise ArtifactError(f"{path}: cannot decrypt: wrong key, or the file was altered") from None
    return st_load(blob), json.loads(header[_PREFIX.size :])


def describe(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> list[str]:
    """A summary of an opened file: what it is and each tensor's shape (never the values)."""
    kind = metadata.get("kind", "shares" if "set_id" in metadata else "unknown")
    about = ", ".join(f"{k} {metadata[k]}" for k in ("party", "rows", "rank", "set_id") if k in metadata)
    lines = [f"{kind}: {about}" if about else kind]
    for name in sorted(tensors):
        lines.append(f"  {name:<24} {str(tensors[name].dtype).replace('torch.', ''):<8} {list(tensors[name].shape)}")
    return lines
