"""Signed model directories: every tampering is refused before anything is computed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import WEIGHTS, write_config
from launch import load_config, run
from smpc import artifacts, keys, model_dir, zoo
from smpc.errors import ArtifactError

SMPC = [sys.executable, "-c", "import sys; from smpc.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A signed digits model, a second signed model, and the keys of bob and mallory."""
    root = tmp_path_factory.mktemp("models")
    keys.create_ca(root / "keys")
    keys.issue(root / "keys", "bob")
    keys.issue(root / "keys", "mallory")
    model_dir.pack("digits_cnn", WEIGHTS, (1, 8, 8), root / "digits")
    model_dir.sign(root / "digits", root / "keys" / "bob.key")
    torch.manual_seed(3)
    other = root / "other.safetensors"
    artifacts.save_weights(zoo.build("digits_cnn"), other)
    model_dir.pack("digits_cnn", other, (1, 8, 8), root / "other")
    model_dir.sign(root / "other", root / "keys" / "bob.key")
    return root


def _flip(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _resign_by_mallory(d: Path, root: Path) -> None:
    model_dir.sign(d, root / "keys" / "mallory.key")


TAMPERINGS = {
    "flip last byte of the weights": lambda d, r: _flip(d / "weights.safetensors"),
    "flip a byte in the middle of the weights": lambda d, r: _flip(d / "weights.safetensors", 5000),
    "flip a byte of the safetensors header": lambda d, r: _flip(d / "weights.safetensors", 20),
    "append a byte to the weights": lambda d, r: (d / "weights.safetensors").open("ab").write(b"\0"),
    "truncate the weights": lambda d, r: (d / "weights.safetensors").write_bytes((d / "weights.safetensors").read_bytes()[:-8]),
    "edit the manifest": lambda d, r: (d / "manifest.json").write_text((d / "manifest.json").read_text().replace("digits_cnn", "lenet5")),
    "add whitespace to the manifest": lambda d, r: (d / "manifest.json").open("a").write(" "),
    "add a file": lambda d, r: (d / "notes.txt").write_text("hello"),
    "add a hidden git file": lambda d, r: (d / ".gitignore").write_text("*"),
    "add a subdirectory": lambda d, r: ((d / "extra").mkdir(), (d / "extra" / "w.bin").write_bytes(b"1")),
    "remove the weights": lambda d, r: (d / "weights.safetensors").unlink(),
    "remove the manifest": lambda d, r: (d / "manifest.json").unlink(),
    "remove the signature": lambda d, r: (d / "model.sig").unlink(),
    "rename the weights": lambda d, r: (d / "weights.safetensors").rename(d / "weights2.safetensors"),
    "swap in another model's weights": lambda d, r: shutil.copy(r / "other" / "weights.safetensors", d / "weights.safetensors"),
    "swap in another model's signature": lambda d, r: shutil.copy(r / "other" / "model.sig", d / "model.sig"),
    "stale signature after repacking": lambda d, r: shutil.copy(r / "other" / "weights.safetensors", d / "weights.safetensors")
    or (d / "model.sig").write_bytes((r / "digits" / "model.sig").read_bytes()),
    "re-signed by another key": _resign_by_mallory,
    "corrupt the signature": lambda d, r: (d / "model.sig").write_text((d / "model.sig").read_text().replace("A", "B", 3)),
    "empty signature": lambda d, r: (d / "model.sig").write_text(""),
    "signature that is not JSON": lambda d, r: (d / "model.sig").write_bytes(b"\x80\x04pickle"),
    "weights replaced by a symlink to an identical copy": lambda d, r: (
        shutil.copy(d / "weights.safetensors", r / f"copy-{os.getpid()}.safetensors"),
        (d / "weights.safetensors").unlink(),
        (d / "weights.safetensors").symlink_to(r / f"copy-{os.getpid()}.safetensors"),
    ),
}


def test_untouched_directory_verifies_and_loads(signed):
    manifest = model_dir.verify(signed / "digits", signed / "keys" / "bob.pub")
    assert manifest["architecture"] == "digits_cnn" and manifest["input_shape"] == [1, 8, 8]
    model = zoo.build("digits_cnn")
    model_dir.load_verified(model, signed / "digits", signed / "keys" / "bob.pub", "digits_cnn", (1, 8, 8))
    reference = zoo.build("digits_cnn")
    artifacts.load_weights(reference, WEIGHTS)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampering_is_refused(signed, tmp_path, name):
    copy = tmp_path / "digits"
    shutil.copytree(signed / "digits", copy)
    TAMPERINGS[name](copy, signed)
    with pytest.raises(ArtifactError, match=rf"^{copy}: (signature verification failed: |not signed)"):
        model_dir.load_verified(zoo.build("digits_cnn"), copy, signed / "keys" / "bob.pub", "digits_cnn", (1, 8, 8))


def test_wrong_public_key_is_refused(signed):
    with pytest.raises(ArtifactError, match="signature verification failed"):
        model_dir.verify(signed / "digits", signed / "keys" / "mallory.pub")


def test_signed_for_another_architecture_is_refused(signed):
    with pytest.raises(ArtifactError, match=r"signed for architecture 'digits_cnn' with input shape \[1, 8, 8\], the config says 'lenet5'"):
        model_dir.load_verified(zoo.build("lenet5"), signed / "digits", signed / "keys" / "bob.pub", "lenet5", (1, 28, 28))


def test_the_standard_model_signing_tool_accepts_the_signature(signed):
    result = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(signed / "digits"),
         "--signature", str(signed / "digits" / "model.sig"), "--public_key", str(signed / "keys" / "bob.pub"),
         "--ignore-paths", str(signed / "digits" / "model.sig")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout + result.stderr


def test_cli_pack_sign_verify(tmp_path, signed):
    out = tmp_path / "m"
    assert subprocess.run(SMPC + ["model", "pack", "digits_cnn", "--weights", str(WEIGHTS), "--input-shape", "1", "8", "8", "--out", str(out)], timeout=120).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["tensors"]["classifier.1.weight"] == [64, 512]
    assert subprocess.run(SMPC + ["model", "sign", str(out), "--key", str(signed / "keys" / "bob.key")], timeout=120).returncode == 0
    ok = subprocess.run(SMPC + ["model", "verify", str(out), "--public-key", str(signed / "keys" / "bob.pub")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("verified: ")
    bad = subprocess.run(SMPC + ["model", "verify", str(out), "--public-key", str(signed / "keys" / "mallory.pub")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: {out}: signature verification failed")


def test_run_with_a_signed_model_and_refusal_when_tampered(tmp_path, signed):
    shutil.copytree(signed / "digits", tmp_path / "digits")
    config_path = write_config(
        tmp_path, samples=20, batch_size=10,
        model={"architecture": "digits_cnn", "input_shape": [1, 8, 8], "public_key": str(signed / "keys" / "bob.pub")},
    )
    doc = config_path.read_text().replace(str(WEIGHTS), str(tmp_path / "digits"))
    config_path.write_text(doc)
    report = run(load_config(config_path), echo=False)
    assert report.agreement >= 0.99
    _flip(tmp_path / "digits" / "weights.safetensors", 4000)
    # the model owner itself refuses (not only the launcher's preflight)
    result = subprocess.run(SMPC + ["party", str(config_path), "--name", "bob"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'digits'}: signature verification failed")
    launched = subprocess.run(SMPC + ["launch", str(config_path)], capture_output=True, text=True, timeout=120)
    assert launched.returncode == 2 and "signature verification failed" in launched.stderr
    assert "[alice]" not in launched.stdout  # refused before any party started


def test_plain_weights_are_refused_when_a_public_key_is_configured(tmp_path, signed):
    config_path = write_config(
        tmp_path, model={"architecture": "digits_cnn", "input_shape": [1, 8, 8], "public_key": str(signed / "keys" / "bob.pub")},
    )
    with pytest.raises(ArtifactError, match="model.public_key is set, so the weights must be a signed model directory"):
        run(load_config(config_path), echo=False)
