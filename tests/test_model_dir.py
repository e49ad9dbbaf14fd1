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
from smpc import artifacts, keys
from smpc.model import model_dir, zoo
from smpc.errors import ArtifactError

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]


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
    "truncate the weights": lambda d, r: (d / "weights.safetensors").write_bytes(
        (d / "weights.safetensors").read_bytes()[:-8]
    ),
    "edit the manifest": lambda d, r: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace("digits_cnn", "lenet5")
    ),
    "add whitespace to the manifest": lambda d, r: (d / "manifest.json").open("a").write(" "),
    "add a file": lambda d, r: (d / "notes.txt").write_text("hello"),
    "add a hidden git file": lambda d, r: (d / ".gitignore").write_text("*"),
    "add a subdirectory": lambda d, r: ((d / "extra").mkdir(), (d / "extra" / "w.bin").write_bytes(b"1")),
    "remove the weights": lambda d, r: (d / "weights.safetensors").unlink(),
    "remove the manifest": lambda d, r: (d / "manifest.json").unlink(),
    "remove the signature": lambda d, r: (d / "model.sig").unlink(),
    "rename the weights": lambda d, r: (d / "weights.safetensors").rename(d / "weights2.safetensors"),
    "swap in another model's weights": lambda d, r: shutil.copy(
        r / "other" / "weights.safetensors", d / "weights.safetensors"
    ),
    "swap in another model's signature": lambda d, r: shutil.copy(r / "other" / "model.sig", d / "model.sig"),
    "stale signature after repacking": lambda d, r: (
        shutil.copy(r / "other" / "weights.safetensors", d / "weights.safetensors")
        or (d / "model.sig").write_bytes((r / "digits" / "model.sig").read_bytes())
    ),
    "re-signed by another key": _resign_by_mallory,
    "corrupt the signature": lambda d, r: (d / "model.sig").write_text(
        (d / "model.sig").read_text().replace("A", "B", 3)
    ),
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


SIGN_AGAIN = "if the change is yours, sign the directory again with `smpc model sign {d} --key OWNER.key`"
REFUSALS = {  # one line naming what differs and what to do; never the library's bytes
    "edit the manifest": "the files differ from the signed ones (changed: manifest.json): " + SIGN_AGAIN,
    "add a file": "the files differ from the signed ones (added: notes.txt): " + SIGN_AGAIN,
    "add a subdirectory": "the files differ from the signed ones (added: extra/w.bin): " + SIGN_AGAIN,
    "remove the weights": "the files differ from the signed ones (removed: weights.safetensors): " + SIGN_AGAIN,
    "rename the weights": "the files differ from the signed ones (added: weights2.safetensors; removed: weights.safetensors): "
    + SIGN_AGAIN,
    "stale signature after repacking": "the files differ from the signed ones (changed: weights.safetensors): "
    + SIGN_AGAIN,
    "signature that is not JSON": "model.sig is damaged or not a model signature: sign the directory again with `smpc model sign {d} --key OWNER.key`",
    "weights replaced by a symlink to an identical copy": "weights.safetensors: a symbolic link, which a signed directory may not hold: put the file itself there",
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refusal_names_the_files_and_what_to_do(signed, tmp_path, name):
    copy = tmp_path / "digits"
    shutil.copytree(signed / "digits", copy)
    TAMPERINGS[name](copy, signed)
    with pytest.raises(ArtifactError) as err:
        model_dir.verify(copy, signed / "keys" / "bob.pub")
    assert str(err.value) == f"{copy}: signature verification failed: " + REFUSALS[name].format(d=copy)
    assert "\n" not in str(err.value) and "b'" not in str(err.value) and "\\x" not in str(err.value)


def _fingerprint(path: Path) -> str:
    return model_dir.key_fingerprint(path)[:16]


def test_wrong_public_key_is_refused(signed):
    bob, mallory = signed / "keys" / "bob.pub", signed / "keys" / "mallory.pub"
    with pytest.raises(ArtifactError) as err:
        model_dir.verify(signed / "digits", mallory)
    assert str(err.value) == (
        f"{signed / 'digits'}: signature verification failed: signed by another key (sha256 {_fingerprint(bob)}) than "
        f"{mallory} (sha256 {_fingerprint(mallory)}): give the signer's public key (model.public_key), or sign again "
        f"with `smpc model sign {signed / 'digits'} --key OWNER.key`"
    )


def test_signed_for_another_architecture_is_refused(signed):
    with pytest.raises(
        ArtifactError,
        match=r"signed for architecture 'digits_cnn' with input shape \[1, 8, 8\], the config says 'lenet5'",
    ):
        model_dir.load_verified(
            zoo.build("lenet5"), signed / "digits", signed / "keys" / "bob.pub", "lenet5", (1, 28, 28)
        )


def test_the_standard_model_signing_tool_accepts_the_signature(signed):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_signing",
            "verify",
            "key",
            str(signed / "digits"),
            "--signature",
            str(signed / "digits" / "model.sig"),
            "--public_key",
            str(signed / "keys" / "bob.pub"),
            "--ignore-paths",
            str(signed / "digits" / "model.sig"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout + result.stderr


def test_cli_pack_sign_verify(tmp_path, signed):
    out, bob = tmp_path / "m", signed / "keys" / "bob.pub"
    packed = subprocess.run(
        SMPC
        + ["model", "pack", "digits_cnn", "--weights", str(WEIGHTS), "--input-shape", "1", "8", "8", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout == (
        f"packed {out} (digits_cnn)\n"
        "  batch sizes:      any (the config's batch_size)\n"
        "  one row's shape:  [1, 8, 8]\n"
        f"next: sign it with the owner's key: smpc model sign {out} --key OWNER.key\n"
    )
    assert json.loads((out / "manifest.json").read_text())["tensors"]["classifier.1.weight"] == [64, 512]
    assert (
        subprocess.run(
            SMPC + ["model", "sign", str(out), "--key", str(signed / "keys" / "bob.key")], timeout=120
        ).returncode
        == 0
    )
    ok = subprocess.run(
        SMPC + ["model", "verify", str(out), "--public-key", str(bob)], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        f"verified: {out}\n"
        "  kind:   zoo model digits_cnn (any batch size)\n"
        "  inputs: one row of shape [1, 8, 8]\n"
        f"  signer: key sha256 {_fingerprint(bob)} ({bob})\n"
        "  files:  2 signed: manifest.json, weights.safetensors\n"
    )
    bad = subprocess.run(
        SMPC + ["model", "verify", str(out), "--public-key", str(signed / "keys" / "mallory.pub")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith(
        f"error: {out}: signature verification failed: signed by another key"
    )


def test_cli_pack_help_shows_the_defaults():
    shown = subprocess.run(SMPC + ["model", "pack", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    flat = " ".join(shown.stdout.split())
    assert "(save_pretrained; default: 1)" in flat and "(save_pretrained text models; default: 16)" in flat


def test_cli_verify_describes_a_packed_program(tmp_path, signed):
    import smpc

    model = torch.nn.Sequential(torch.nn.Linear(6, 3)).eval()
    smpc.pack(model, torch.zeros(4, 6), tmp_path / "p")
    model_dir.sign(tmp_path / "p", signed / "keys" / "bob.key")
    bob = signed / "keys" / "bob.pub"
    ok = subprocess.run(
        SMPC + ["model", "verify", str(tmp_path / "p"), "--public-key", str(bob)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        f"verified: {tmp_path / 'p'}\n"
        "  kind:   packed program (3 shapes: batches of 1, 2, 4 rows)\n"
        "  inputs: input [4, 6] (float)\n"
        f"  signer: key sha256 {_fingerprint(bob)} ({bob})\n"
        "  files:  8 signed: buckets/ (4 files), constants.safetensors, manifest.json, program.json, weights.safetensors\n"
    )


def test_launch_of_an_edited_signed_directory_is_one_line_saying_what_to_do(tmp_path, signed):
    shutil.copytree(signed / "digits", tmp_path / "digits")
    config_path = write_config(
        tmp_path,
        samples=20,
        batch_size=10,
        model={"architecture": "digits_cnn", "input_shape": [1, 8, 8], "public_key": str(signed / "keys" / "bob.pub")},
    )
    config_path.write_text(config_path.read_text().replace(str(WEIGHTS), str(tmp_path / "digits")))
    manifest = tmp_path / "digits" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"digits_cnn"', '"lenet5"'))
    launched = subprocess.run(SMPC + ["launch", str(config_path)], capture_output=True, text=True, timeout=120)
    assert launched.returncode == 2
    assert launched.stderr == (
        f"error: {tmp_path / 'digits'}: signature verification failed: the files differ from the signed ones "
        f"(changed: manifest.json): if the change is yours, sign the directory again with "
        f"`smpc model sign {tmp_path / 'digits'} --key OWNER.key`\n"
    )


def test_run_with_a_signed_model_and_refusal_when_tampered(tmp_path, signed):
    shutil.copytree(signed / "digits", tmp_path / "digits")
    config_path = write_config(
        tmp_path,
        samples=20,
        batch_size=10,
        model={"architecture": "digits_cnn", "input_shape": [1, 8, 8], "public_key": str(signed / "keys" / "bob.pub")},
    )
    doc = config_path.read_text().replace(str(WEIGHTS), str(tmp_path / "digits"))
    config_path.write_text(doc)
    report = run(load_config(config_path), echo=False)
    assert report.agreement >= 0.99
    _flip(tmp_path / "digits" / "weights.safetensors", 4000)
    # the model owner itself refuses (not only the launcher's preflight)
    result = subprocess.run(
        SMPC + ["party", str(config_path), "--name", "bob"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'digits'}: signature verification failed")
    launched = subprocess.run(SMPC + ["launch", str(config_path)], capture_output=True, text=True, timeout=120)
    assert launched.returncode == 2 and "signature verification failed" in launched.stderr
    assert "[alice]" not in launched.stdout  # refused before any party started


def test_plain_weights_are_refused_when_a_public_key_is_configured(tmp_path, signed):
    config_path = write_config(
        tmp_path,
        model={"architecture": "digits_cnn", "input_shape": [1, 8, 8], "public_key": str(signed / "keys" / "bob.pub")},
    )
    with pytest.raises(ArtifactError, match="model.public_key is set, so the weights must be a signed model directory"):
        run(load_config(config_path), echo=False)
