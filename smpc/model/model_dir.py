"""Signed model directories: `smpc model pack | sign | verify`.

A model directory holds `weights.safetensors` and `manifest.json` (format, version,
architecture, input shape, tensor shapes). `sign` signs the whole directory with the
model owner's elliptic-curve key using the OpenSSF model-signing standard (the
`model-signing` package; the signature, a Sigstore bundle, is `model.sig` inside the
directory), so anyone can also check it with `model_signing verify key`. Before a
party loads a model directory it verifies the signature against the owner's public key
named in the config: a changed byte, an added, removed or swapped file, a wrong key or
a stale signature refuses the model before anything is computed. Nothing is unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from smpc import artifacts
from smpc.model import zoo
from smpc.errors import ArtifactError

if TYPE_CHECKING:
    from model_signing import hashing

FORMAT = "smpc-model"
VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
SIGNATURE = "model.sig"


def _hashing() -> hashing.Config:
    from model_signing import hashing

    # git files are not special here: an added .gitignore is tampering like any file
    # model_signing leaves its Config constructors unannotated
    return hashing.Config().set_ignored_paths(  # type: ignore[no-untyped-call]
        paths=[SIGNATURE], ignore_git_paths=False
    )


def pack(architecture: str, weights: Path, input_shape: tuple[int, ...], out: Path) -> None:
    """Write a model directory from an architecture and its weights.

    Args:
        architecture: zoo name or ``module:factory``.
        weights: a safetensors state dict, or a ``.pt`` state dict (loaded with weights_only=True).
        input_shape: one sample's shape.
        out: the directory to create (must not exist yet).
    """
    model = zoo.build(architecture)
    if weights.suffix == ".pt":
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ArtifactError(f"{weights}: not a loadable state dict ({exc})") from None
        model.load_state_dict(state)
    else:
        artifacts.load_weights(model, weights)
    try:
        model.eval()(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ArtifactError(f"{architecture}: cannot take an input of shape {list(input_shape)}: {exc}") from None
    if out.exists():
        raise ArtifactError(f"{out}: already exists")
    out.mkdir(parents=True)
    artifacts.save_weights(model, out / WEIGHTS)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": architecture,
        "input_shape": list(input_shape),
        "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def sign(directory: Path, private_key: Path) -> Path:
    """Sign the directory with an EC private key (PEM); returns the signature's path."""
    from model_signing import signing

    if not (directory / MANIFEST).is_file():
        raise ArtifactError(f"{directory}: not a model directory (no {MANIFEST}; run `smpc model pack`)")
    try:
        signing.Config().use_elliptic_key_signer(  # type: ignore[no-untyped-call]  # unannotated constructor
            private_key=private_key
        ).set_hashing_config(_hashing()).sign(directory, directory / SIGNATURE)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{directory}: cannot sign with {private_key}: {exc}") from None
    return directory / SIGNATURE


def key_fingerprint(public_key: Path) -> str:
    """A public key's fingerprint as model-signing records it in a signature (the hex
    SHA-256 of its PEM SubjectPublicKeyInfo); raises ArtifactError when it is no EC key."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_key.read_bytes())
    except (OSError, ValueError, TypeError):
        raise ArtifactError(f"{public_key}: not a PEM public key (the owner's NAME.pub from `smpc keys`)") from None
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


@dataclass(frozen=True)
class Signed:
    """What a signature file says was signed: each file's digest, the hash, the signer's
    key fingerprint ("" when it names none). Read without checking the signature: trust
    it only after `verify` succeeded (before, it only explains a refusal)."""

    files: dict[str, str]
    algorithm: str
    key: str


def read_signature(signature: Path) -> Signed | None:
    """The signed file list of a model-signing bundle (a Sigstore bundle whose DSSE
    envelope carries an in-toto statement); None when it is not one this module can read."""
    try:
        bundle = json.loads(signature.read_bytes())
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))
        predicate = statement["predicate"]
        files = {str(r["name"]): str(r["digest"]) for r in predicate["resources"]}
        serialization = predicate["serialization"]
        method, algorithm = serialization["method"], str(serialization["hash_type"])
        key = str((bundle.get("verificationMaterial") or {}).get("publicKey", {}).get("hint") or "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # binascii and JSON errors are ValueErrors
        return None
    if method != "files" or algorithm not in hashlib.algorithms_available:
        return None  # sharded or other digests: not recomputed here
    return Signed(files, algorithm, key)


def _on_disk(directory: Path, algorithm: str) -> tuple[dict[str, str], list[str]]:
    # every file but the signature, digested as model-signing's "files" method does; and
    # the symbolic links, which it refuses to sign
    digests, links = {}, []
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if name == SIGNATURE:
            continue
        if path.is_symlink():
            links.append(name)
        elif path.is_file():
            digest = hashlib.new(algorithm)
            with path.open("rb") as f:  # in chunks (hashlib.file_digest needs Python 3.11)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            digests[name] = digest.hexdigest()
    return digests, links


def _why_refused(directory: Path, public_key: Path) -> str:
    """Why the signature library refused `directory`, in one line that says what to do:
    the files that differ from the signed ones (computed here, not read from the
    library's message), else the key, else the signature file itself."""
    sign_again = f"smpc model sign {directory} --key OWNER.key"
    signed = read_signature(directory / SIGNATURE)
    if signed is None:
        return f"{SIGNATURE} is damaged or not a model signature: sign the directory again with `{sign_again}`"
    disk, links = _on_disk(directory, signed.algorithm)
    if links:
        return (
            f"{', '.join(links)}: {'symbolic links' if len(links) > 1 else 'a symbolic link'}, which a signed "
            "directory may not hold: put the file itself there"
        )
    differ = [
        ("changed", sorted(n for n in signed.files.keys() & disk.keys() if signed.files[n] != disk[n])),
        ("added", sorted(disk.keys() - signed.files.keys())),
        ("removed", sorted(signed.files.keys() - disk.keys())),
    ]
    if any(names for _, names in differ):
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in differ if names)
        return (
            f"the files differ from the signed ones ({what}): if the change is yours, "
            f"sign the directory again with `{sign_again}`"
        )
    mine = key_fingerprint(public_key)
    if signed.key and signed.key != mine:
        return (
            f"signed by another key (sha256 {signed.key[:16]}) than {public_key} (sha256 {mine[:16]}): "
            f"give the signer's public key (model.public_key), or sign again with `{sign_again}`"
        )
    return (
        f"{SIGNATURE} does not verify with {public_key} (damaged, or made with another key): "
        f"sign the directory again with `{sign_again}`"
    )


def verify(directory: Path, public_key: Path) -> dict[str, Any]:
    """Check the directory's signature against the owner's public key; returns the manifest.

    Raises ArtifactError naming the directory and what failed.
    """
    from model_signing import verifying

    if not directory.is_dir():
        raise ArtifactError(f"{directory}: model directory not found")
    if not (directory / SIGNATURE).is_file():
        raise ArtifactError(f"{directory}: not signed (no {SIGNATURE})")
    if not public_key.is_file():
        raise ArtifactError(f"{public_key}: public key not found")
    try:
        verifying.Config().use_elliptic_key_verifier(  # type: ignore[no-untyped-call]  # unannotated constructor
            public_key=public_key
        ).set_hashing_config(_hashing()).verify(directory, directory / SIGNATURE)
    except Exception:  # the library raises ValueError and others for every kind of mismatch
        raise ArtifactError(
            f"{directory}: signature verification failed: {_why_refused(directory, public_key)}"
        ) from None
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{directory / MANIFEST}: not JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArtifactError(f"{directory / MANIFEST}: expected format {FORMAT} version {VERSION}")
    return manifest


def describe_verified(directory: Path, public_key: Path, manifest: dict[str, Any]) -> list[str]:
    """What `verify` checked, for `smpc model verify`: the kind of model, its inputs with
    their shapes, the signer's key and the files the signature covers."""
    signed = read_signature(directory / SIGNATURE)
    files = sorted(signed.files) if signed is not None else []
    if manifest.get("architecture") == "program":
        shapes = sorted({(int(r), int(q)) for r, q in manifest.get("buckets") or []})
        rows = sorted({r for r, _ in shapes})
        seqs = sorted({q for _, q in shapes if q})
        kind = f"packed program ({len(shapes) or 1} shapes: batches of {', '.join(map(str, rows)) or '?'} rows" + (
            f" x {', '.join(map(str, seqs))} tokens)" if seqs else ")"
        )
        inputs = [f"{i['name']} {i['shape']} ({i['kind']})" for i in manifest.get("inputs", [])]
    else:
        kind = f"zoo model {manifest.get('architecture')} (any batch size)"
        inputs = [f"one row of shape {manifest.get('input_shape')}"]
    # a folder (a packed program's buckets) is one entry with its count
    top: dict[str, int] = {}
    for name in files:
        head, _, rest = name.partition("/")
        top[head + "/" if rest else head] = top.get(head + "/" if rest else head, 0) + 1
    listed = ", ".join(name if not name.endswith("/") else f"{name} ({n} files)" for name, n in top.items())
    return [
        f"verified: {directory}",
        f"  kind:   {kind}",
        f"  inputs: {'; '.join(inputs)}",
        f"  signer: key sha256 {key_fingerprint(public_key)[:16]} ({public_key})",
        f"  files:  {len(files)} signed: {listed}",
    ]


def load_verified(
    model: torch.nn.Module, directory: Path, public_key: Path, architecture: str, input_shape: tuple[int, ...]
) -> None:
    """Verify, check the manifest against the config, then load the weights into `model`."""
    manifest = verify(directory, public_key)
    if manifest.get("architecture") != architecture or tuple(manifest.get("input_shape", ())) != tuple(input_shape):
        raise ArtifactError(
            f"{directory}: signed for architecture {manifest.get('architecture')!r} with input shape "
            f"{manifest.get('input_shape')}, the config says {architecture!r} with {list(input_shape)}"
        )
    artifacts.load_weights(model, directory / WEIGHTS)


def weights_file(weights: Path) -> Path:
    """The safetensors file behind a `weights:` entry (a file, or a model directory)."""
    return weights / WEIGHTS if weights.is_dir() else weights


def load_owner_weights(model: torch.nn.Module, weights: Path, config_model: Any) -> None:
    """The model owner's load: a signed directory, verified against model.public_key,
    or (only when no public key is configured) a plain safetensors file."""
    public_key = config_model.public_key
    if weights.is_dir():
        if public_key is None:
            raise ArtifactError(f"{weights}: a model directory must be verified: set model.public_key in the config")
        load_verified(model, weights, public_key, config_model.architecture, config_model.input_shape)
    elif public_key is not None:
        raise ArtifactError(
            f"{weights}: model.public_key is set, so the weights must be a signed model directory "
            "(smpc model pack, then smpc model sign)"
        )
    else:
        artifacts.load_weights(model, weights)
