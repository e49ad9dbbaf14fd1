"""The start-up agreement's refusals: a differing model directory is named with each
side's digest; any other differing setting points at the configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness import processes_mentioning, write_program_config
from smpc import agreement, artifacts
from smpc.config import parse_config
from smpc.dealer import messages as m
from smpc.dealer.states import RollCall, SettingsError
from smpc.errors import AgreementError

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]
ROOT = Path(__file__).resolve().parent.parent
MINE = {"parties": "00000000000000aa", "model.architecture": "ab12ab12ab12ab12", "batch_size": "0000000000000040"}
THEIRS = dict(MINE, **{"model.architecture": "cd34cd34cd34cd34"})


def _config(model: dict) -> object:
    doc = yaml.safe_load((ROOT / "configs" / "local-2pc.yaml").read_text())
    doc["model"] = model
    return parse_config(doc, ROOT / "configs" / "x.yaml")


def _vector(fields: dict[str, str]) -> torch.Tensor:
    return torch.tensor([int(d, 16) - (1 << 63) for d in fields.values()], dtype=torch.long)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            {"program": "../models/x"},
            f"agreement check failed: model directory {ROOT / 'models' / 'x'} differs between alice (sha256 ab12ab12ab12ab12) "
            "and bob (sha256 cd34cd34cd34cd34): give every party the same signed directory",
        ),
        (
            {"architecture": "digits_cnn", "input_shape": [1, 8, 8]},
            "agreement check failed: model.architecture differs between alice and bob (compare their configs)",
        ),
    ],
)
def test_parties_are_told_what_differs(monkeypatch, model, message):
    monkeypatch.setattr("smpc.session.all_gather_int64", lambda vector: [vector, _vector(THEIRS)])
    with pytest.raises(AgreementError) as err:
        agreement.check_parties(_config(model), MINE)
    assert str(err.value) == message


def test_the_dealer_names_a_differing_model_directory():
    roll = RollCall(["alice", "bob"], MINE, Path("/models/x"))
    with pytest.raises(SettingsError) as err:
        roll.receive(m.CheckIn("alice", 0, THEIRS), "h")
    assert str(err.value) == (
        "agreement check failed: model directory /models/x differs between the dealer (sha256 ab12ab12ab12ab12) "
        "and alice (sha256 cd34cd34cd34cd34): give every party the same signed directory"
    )


def test_parties_with_different_program_folders_under_one_config_name_the_folder(tmp_path):
    import smpc

    torch.manual_seed(0)
    x = torch.randn(4, 6)
    for name, width in (("alice", 3), ("bob", 5)):  # each party's copy of "the" program
        smpc.pack(torch.nn.Sequential(torch.nn.Linear(6, width)).eval(), x, tmp_path / name / "model", buckets=False)
    artifacts.save_inputs(tmp_path / "data.safetensors", {"input": x})
    base = write_program_config(
        tmp_path,
        tmp_path / "alice" / "model",
        tmp_path / "data.safetensors",
        batch_size=4,
        timeouts={"connect_s": 30, "op_s": 10, "run_s": 60},
    )
    doc = yaml.safe_load(base.read_text())
    configs = {}
    for name in ("alice", "bob"):  # the same settings; only the folder's content differs
        doc["model"]["program"] = doc["parties"][1]["weights"] = str(tmp_path / name / "model")
        configs[name] = tmp_path / name / "config.yaml"
        configs[name].write_text(yaml.safe_dump(doc, sort_keys=False))
    procs = {
        n: subprocess.Popen(
            SMPC + ["party", str(c), "--name", n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n, c in configs.items()
    }
    try:
        errors = {n: p.communicate(timeout=120)[1] for n, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    digests = {n: agreement.fields(*_program_of(configs[n]))["model.architecture"] for n in configs}
    for name, err in errors.items():
        assert procs[name].returncode == 2, err
        folder = tmp_path / name / "model"
        assert (
            f"error: agreement check failed: model directory {folder} differs between alice (sha256 {digests['alice']}) "
            f"and bob (sha256 {digests['bob']}): give every party the same signed directory" in err
        ), err
    assert all(processes_mentioning(str(c)) == [] for c in configs.values())


def _program_of(path: Path) -> tuple:
    from smpc.config import load_config
    from smpc.model import pack

    config = load_config(path)
    return config, pack.build_program(config)
