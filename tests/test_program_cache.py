"""Zoo programs kept between runs (smpc.model.program_cache): real conversions, real files,
and a real process that starts with the cache and never imports torch's compiler stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from harness import ROOT, WEIGHTS, write_config
from launch import load_config
from smpc.model import pack, program_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMPC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "programs"


def test_a_second_build_reads_the_program_the_first_converted(tmp_path, cache):
    config = load_config(write_config(tmp_path, samples=10))
    converted = pack.build_program(config)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and (entries[0] / "program.json").is_file()
    kept = pack.build_program(config)
    assert kept is not converted
    assert kept.architecture_fingerprint() == converted.architecture_fingerprint()
    assert {k: v.shape for k, v in kept.secret.items()} == {k: v.shape for k, v in converted.secret.items()}
    # the model owner converts from its weights every time: the same architecture, with
    # its weights in place of the kept program's zeros
    owner = pack.build_program(config, WEIGHTS)
    assert owner.architecture_fingerprint() == kept.architecture_fingerprint()
    assert not torch.equal(owner.secret["p_features_0_weight"], kept.secret["p_features_0_weight"])
    assert len(list(cache.iterdir())) == 1  # the owner never writes

    # a party that starts on a kept program never imports torch.export's compiler stack
    probe = (
        "import sys; from launch import load_config; from smpc.model import pack; "
        f"p = pack.build_program(load_config({str(config.source)!r})); "
        "print('torch._dynamo' in sys.modules, p.architecture_fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", converted.architecture_fingerprint()]


def test_the_owner_only_and_off_write_nothing(tmp_path, cache, monkeypatch):
    config = load_config(write_config(tmp_path, samples=10))
    pack.build_program(config, WEIGHTS)
    assert not cache.exists()
    monkeypatch.setenv("SMPC_CACHE_DIR", "off")
    assert program_cache.directory() is None
    pack.build_program(config)
    assert not cache.exists()


def test_a_damaged_entry_is_converted_again_and_replaced(tmp_path, cache):
    config = load_config(write_config(tmp_path, samples=10))
    fingerprint = pack.build_program(config).architecture_fingerprint()
    (entry,) = cache.iterdir()
    (entry / "program.json").write_text("{ not json")
    assert pack.build_program(config).architecture_fingerprint() == fingerprint
    assert json.loads((entry / "program.json").read_text())["nodes"]
    # an entry changed on disk is a different architecture: the parties' agreement, which
    # compares fingerprints with the owner's fresh conversion, refuses it
    document = json.loads((entry / "program.json").read_text())
    conv = next(n for n in document["nodes"] if n.get("target") == "aten.conv2d.default")
    conv["args"][4] = [0, 0]  # its padding
    (entry / "program.json").write_text(json.dumps(document))
    assert pack.build_program(config).architecture_fingerprint() != fingerprint


def test_the_key_follows_every_fact_and_only_zoo_models_are_kept(monkeypatch):
    base = program_cache.key("digits_cnn", 64, (1, 8, 8))
    assert base is not None
    assert program_cache.key("digits_cnn", 32, (1, 8, 8)) != base
    assert program_cache.key("digits_cnn", 64, (1, 16, 16)) != base
    assert program_cache.key("lenet5", 64, (1, 8, 8)) != base
    monkeypatch.setattr(program_cache, "_code_digest", lambda: "another smpc")
    assert program_cache.key("digits_cnn", 64, (1, 8, 8)) != base
    assert program_cache.key("torch.nn:Linear", 64, (4,)) is None  # the user's code may change
