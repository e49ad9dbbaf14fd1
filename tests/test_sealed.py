"""Encryption at rest: sealed files round-trip, and refuse wrong keys and any alteration."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from smpc import sealed
from smpc.errors import ArtifactError
from launch.cli import main as smpc_main


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "alice.storage"
    sealed.create_key(path)
    return path


def _sealed(tmp_path, key_file):
    path = tmp_path / "shares.sealed"
    tensors = {"a": torch.arange(6, dtype=torch.long).view(2, 3) - 2**62, "b": torch.rand(4)}
    sealed.seal(path, tensors, sealed.load_key(key_file), {"party": "alice", "kind": "outputs"})
    return path, tensors


def test_round_trip_and_file_modes(tmp_path, key_file):
    path, tensors = _sealed(tmp_path, key_file)
    got, meta = sealed.unseal(path, sealed.load_key(key_file))
    assert meta == {"party": "alice", "kind": "outputs"}
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"alice" in path.read_bytes() and tensors["a"].numpy().tobytes() not in path.read_bytes()


def test_wrong_key(tmp_path, key_file):
    path, _ = _sealed(tmp_path, key_file)
    other = tmp_path / "bob.storage"
    sealed.create_key(other)
    with pytest.raises(ArtifactError, match="cannot decrypt: wrong key, or the file was altered"):
        sealed.unseal(path, sealed.load_key(other))


@pytest.mark.parametrize("where", ["metadata", "nonce", "ciphertext", "tag"])
def test_any_altered_byte_is_refused(tmp_path, key_file, where):
    path, _ = _sealed(tmp_path, key_file)
    data = bytearray(path.read_bytes())
    meta_len = int.from_bytes(data[9:13], "little")
    offset = {
        "metadata": 13 + 2,
        "nonce": 13 + meta_len + 3,
        "ciphertext": 13 + meta_len + 12 + 5,
        "tag": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="cannot decrypt: wrong key, or the file was altered"):
        sealed.unseal(path, sealed.load_key(key_file))


def test_truncated_and_foreign_files(tmp_path, key_file):
    path, _ = _sealed(tmp_path, key_file)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ArtifactError, match="truncated sealed file"):
        sealed.unseal(path, sealed.load_key(key_file))
    path.write_bytes(b"\x80\x04 a pickle")
    with pytest.raises(ArtifactError, match="not a sealed smpc file"):
        sealed.unseal(path, sealed.load_key(key_file))


def test_key_files_are_checked(tmp_path, key_file):
    os.chmod(key_file, 0o644)
    with pytest.raises(ArtifactError, match=r"accessible to other users \(chmod 600 it\)"):
        sealed.load_key(key_file)
    short = tmp_path / "short.key"
    short.write_bytes(b"123")
    os.chmod(short, 0o600)
    with pytest.raises(ArtifactError, match="must be 32 bytes, found 3"):
        sealed.load_key(short)
    with pytest.raises(FileExistsError):
        sealed.create_key(key_file)  # never overwrites a key


def test_a_receiver_with_a_storage_key_keeps_its_outputs_sealed(tmp_path):
    from harness import write_config
    from launch import load_config, run
    from smpc.runfiles import output_path

    sealed.create_key(tmp_path / "alice.storage")
    sealed.create_key(tmp_path / "bob.storage")
    config_path = write_config(tmp_path, samples=20, batch_size=10)
    text = config_path.read_text().replace(
        "roles:\n  - data_owner\n  - output\n",
        f"roles:\n  - data_owner\n  - output\n  storage_key: {tmp_path / 'alice.storage'}\n",
        1,
    )
    config_path.write_text(text)
    config = load_config(config_path)
    assert config.parties[0].storage_key == tmp_path / "alice.storage"
    report = run(config, echo=False)
    assert report.agreement >= 0.99  # the launcher read them back with alice's key
    path = output_path(config, "alice")
    assert path.name == "alice.output.sealed" and not (tmp_path / "run" / "alice.output.safetensors").exists()
    outputs, meta = sealed.unseal(path, sealed.load_key(tmp_path / "alice.storage"))
    assert outputs["outputs"].shape == (20, 10) and meta == {"party": "alice", "kind": "outputs", "rows": 20}
    with pytest.raises(ArtifactError, match="wrong key"):
        sealed.unseal(path, sealed.load_key(tmp_path / "bob.storage"))

    # the receiving organization opens its own result with its own key
    smpc = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]
    shown = subprocess.run(
        smpc + ["open", str(path), "--key", str(tmp_path / "alice.storage")], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and shown.stdout.splitlines() == [
        "outputs: party alice, rows 20",
        "  outputs                  float32  [20, 10]",
    ]
    out = tmp_path / "mine.safetensors"
    opened = subprocess.run(
        smpc + ["open", str(path), "--key", str(tmp_path / "alice.storage"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert opened.returncode == 0 and torch.equal(load_file(str(out))["outputs"], outputs["outputs"])
    wrong = subprocess.run(
        smpc + ["open", str(path), "--key", str(tmp_path / "bob.storage")], capture_output=True, text=True, timeout=60
    )
    assert (
        wrong.returncode == 2 and wrong.stderr == f"error: {path}: cannot decrypt: wrong key, or the file was altered\n"
    )
    plain = subprocess.run(
        smpc + ["open", str(out), "--key", str(tmp_path / "alice.storage")], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 2 and plain.stderr == f"error: {out}: not a sealed smpc file\n"


def test_open_summarizes_cached_shares_but_never_writes_them_out(tmp_path, key_file, capsys):
    path = tmp_path / "bob.shares.sealed"
    sealed.seal(
        path,
        {"fc.weight": torch.zeros(3, 4, dtype=torch.long)},
        sealed.load_key(key_file),
        {"fingerprint": "f", "names": ["alice", "bob"], "rank": 1, "set_id": 7, "weights_sha256": "w"},
    )
    assert smpc_main(["open", str(path), "--key", str(key_file)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "shares: rank 1, set_id 7",
        "  fc.weight                int64    [3, 4]",
    ]
    assert smpc_main(["open", str(path), "--key", str(key_file), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "kept sealed: no --out" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()


def test_shares_are_kept_sealed_and_reused_across_runs(tmp_path):
    import json

    from harness import WEIGHTS, write_config
    from launch import load_config, run
    from smpc import artifacts
    from smpc.model import zoo

    for name in ("alice", "bob"):
        sealed.create_key(tmp_path / f"{name}.storage")
    config_path = write_config(tmp_path, samples=20, batch_size=10, share_cache=True)
    doc = config_path.read_text()
    doc = doc.replace(
        "  - data_owner\n  - output\n", f"  - data_owner\n  - output\n  storage_key: {tmp_path / 'alice.storage'}\n", 1
    )
    doc = doc.replace("  - model_owner\n", f"  - model_owner\n  storage_key: {tmp_path / 'bob.storage'}\n", 1)
    config_path.write_text(doc)

    def events(name):
        lines = (tmp_path / "run" / f"{name}.audit.jsonl").read_text().splitlines()
        return [json.loads(line)["event"] for line in lines]

    first = run(load_config(config_path), echo=False)
    assert "shares_sealed" in events("alice") and "shares_sealed" in events("bob")
    second = run(load_config(config_path), echo=False)
    assert "shares_reused" in events("alice") and "shares_reused" in events("bob")
    assert second.agreement >= 0.99 and abs(second.max_abs_error - first.max_abs_error) < 0.05

    # new weights at the owner: the old shares no longer fit, and are replaced
    torch.manual_seed(11)
    artifacts.save_weights(zoo.build("digits_cnn"), tmp_path / "new.safetensors")
    config_path.write_text(config_path.read_text().replace(str(WEIGHTS), str(tmp_path / "new.safetensors")))
    third = run(load_config(config_path), echo=False)
    assert "shares_sealed" in events("bob") and "shares_reused" not in events("bob")
    assert third.agreement >= 0.99

    # an altered cache file is an error, not a silent re-share
    shares = tmp_path / "run" / "bob.shares.sealed"
    data = bytearray(shares.read_bytes())
    data[-5] ^= 1
    shares.write_bytes(bytes(data))
    from smpc.errors import PartyError

    with pytest.raises(
        PartyError,
        match=r"party bob failed \((exit code 2|stopped by the launcher as it was leaving)\): .*bob\.shares\.sealed: cannot decrypt",
    ):
        run(load_config(config_path), echo=False)
