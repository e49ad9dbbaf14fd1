"""The launcher and party program end to end: real processes, real files, real errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness import WEIGHTS, processes_mentioning, write_config
from launch import load_config, run
from smpc import artifacts

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]


def test_cli_demo_run_reports_agreement_and_writes_json(tmp_path):
    config = write_config(tmp_path, samples=100)
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        SMPC + ["launch", str(config), "--report", str(report_file), "--profile"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_file.read_text())
    # the cost profile: rows of (layer, op) that add up to the party's traffic
    for name, party in report["parties"].items():
        rows = party["layers"]
        assert all(
            set(row) == {"layer", "op", "elements", "bytes_sent", "rounds", "seconds", "key_bytes"} for row in rows
        )
        assert sum(row["bytes_sent"] for row in rows) == party["bytes_sent"], name
        assert sum(row["rounds"] for row in rows) == party["rounds"], name
        ops = {(row["layer"], row["op"]): row for row in rows}
        # the digits CNN: ReLU(x) = x [x >= 0], a comparison of every element and a product
        # (2048 a row in features.4; two batches of 64 rows, the last one padded)
        relu = ops[("features.4 ReLU", "relu: comparisons")]
        assert relu["elements"] == 2 * 64 * 2048 and relu["bytes_sent"] > 0 and relu["rounds"] > 0
        assert ops[("features.4 ReLU", "relu: products")]["elements"] == relu["elements"]
        assert ops[("features.3 Conv2d", "conv2d: products")]["elements"] == relu["elements"]
        assert {"<setup>", "<input sharing>", "<output reveal>"} <= {layer for layer, _ in ops}
    table = result.stdout[result.stdout.index("cost profile of party") :]
    lines = table.splitlines()
    assert lines[1].split() == ["layer", "op", "elements", "MiB", "share", "rounds", "seconds", "key", "MiB"]
    first = lines[3]  # largest first: the digits CNN's widest ReLU's comparisons
    assert first.startswith("features.4 ReLU") and "relu: comparisons" in first, table
    assert any(line.startswith("total") and "100.0%" in line for line in lines), table
    for key in ("samples", "accuracy_mpc", "accuracy_plain", "agreement", "max_abs_error", "wall_s", "parties"):
        assert key in report
    assert report["samples"] == 100
    assert report["agreement"] >= 0.99
    assert report["max_abs_error"] < 0.1
    assert set(report["parties"]) == {"alice", "bob"}
    assert all(p["bytes_sent"] > 0 and p["rounds"] > 0 for p in report["parties"].values())
    # console lines carry the party prefix; the summary is printed at the end
    assert "[alice] " in result.stdout and "[bob] " in result.stdout
    assert "top-1 agreement" in result.stdout
    # only the output receiver holds the revealed outputs
    run_dir = tmp_path / "run"
    assert (run_dir / "alice.output.safetensors").exists()
    assert not (run_dir / "bob.output.safetensors").exists()
    assert (run_dir / "alice.log").read_text() and (run_dir / "bob.log").read_text()
    # every phase ends with one line and its time; logs hold whole lines, no progress frames
    alice_log = (run_dir / "alice.log").read_bytes()
    assert b"\r" not in alice_log
    phases = [line.split(":")[0] for line in alice_log.decode().splitlines()]
    for expected in (
        "converted the model",
        "checked this party's files",
        "connected to every party",
        "settings agreed",
        "shared the model",
        "ready to compute",
        "batch 1/2",
        "batch 2/2",
        "online phase",
    ):
        assert expected in phases, (expected, phases)
    # audit logs: the model fingerprint at the owner, and every reveal with its receiver
    from smpc.artifacts import file_digest

    audit = {
        name: [json.loads(line) for line in (run_dir / f"{name}.audit.jsonl").read_text().splitlines()]
        for name in ("alice", "bob")
    }
    assert audit["bob"][0]["event"] == "start" and audit["bob"][0]["weights_sha256"] == file_digest(WEIGHTS)
    assert audit["alice"][0]["weights_sha256"] is None  # alice never had the weights
    reveals = [e for e in audit["alice"] if e["event"] == "reveal"]
    assert sum(e["rows"] for e in reveals) == 100 and all(e["to"] == ["alice"] for e in reveals)


def test_api_three_parties_with_a_helper(tmp_path):
    report = run(load_config(write_config(tmp_path, samples=40, helpers=1, batch_size=16)), echo=False)
    assert report.samples == 40
    assert report.agreement >= 0.99
    assert set(report.parties) == {"alice", "bob", "helper0"}
    assert not (tmp_path / "run" / "helper0.output.safetensors").exists()
    assert not (tmp_path / "run" / "bob.output.safetensors").exists()


def _cli_error(config: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(SMPC + ["launch", str(config)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert processes_mentioning(str(config)) == []
    return result


def test_malformed_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("parties: [\n")
    result = _cli_error(path)
    assert result.stderr.startswith(f"error: {path}: malformed YAML: line ")
    assert result.stderr.count("\n") == 1


def test_unknown_key_is_named(tmp_path):
    result = _cli_error(write_config(tmp_path, batchsize=3))
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'config.yaml'}: batchsize: unknown key; did you mean batch_size?"
    )


def test_an_unknown_key_is_told_the_closest_known_one(tmp_path):
    result = _cli_error(write_config(tmp_path, batch_sise=4))
    assert result.stderr == f"error: {tmp_path / 'config.yaml'}: batch_sise: unknown key; did you mean batch_size?\n"


def test_missing_weights_file_is_named(tmp_path):
    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["parties"][1]["weights"] = "nowhere.safetensors"
    config.write_text(yaml.safe_dump(doc))
    result = _cli_error(config)
    assert result.stderr.strip() == f"error: {tmp_path / 'nowhere.safetensors'}: weights file not found"


def test_missing_data_file_is_named(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "data0.safetensors").unlink()
    result = _cli_error(config)
    assert result.stderr.strip() == f"error: {tmp_path / 'data0.safetensors'}: data file not found"


def test_data_of_the_wrong_shape_names_the_expected_shape(tmp_path):
    config = write_config(tmp_path)
    artifacts.save_data(tmp_path / "data0.safetensors", torch.zeros(5, 1, 9, 9))
    result = _cli_error(config)
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'data0.safetensors'}: inputs have shape [5, 1, 9, 9], expected [N, 1, 8, 8] "
        "(model.input_shape is [1, 8, 8])"
    )


def test_input_shape_the_model_cannot_take(tmp_path):
    config = write_config(tmp_path, model={"architecture": "digits_cnn", "input_shape": [1, 12, 12]})
    artifacts.save_data(tmp_path / "data0.safetensors", torch.zeros(5, 1, 12, 12))
    result = _cli_error(config)
    assert result.stderr.startswith("error: the model cannot take an input of shape [64, 1, 12, 12]: ")
    assert result.stderr.count("\n") == 1


def test_party_program_rejects_an_unknown_party_name(tmp_path):
    config = write_config(tmp_path)
    result = subprocess.run(
        SMPC + ["party", str(config), "--name", "mallory"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {config}: no party named 'mallory' (parties: alice, bob)"


def test_a_top1_reveal_gives_the_same_accuracy_and_only_class_indices(tmp_path):
    from safetensors.torch import load_file

    from smpc.runfiles import output_path

    config_path = write_config(tmp_path, samples=40, batch_size=20, dealer=True)
    full = run(load_config(config_path), echo=False)
    doc = yaml.safe_load(config_path.read_text())
    doc["parties"][0]["reveal"] = "top1"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = load_config(config_path)
    top1 = run(config, echo=False)
    assert top1.accuracy_mpc == full.accuracy_mpc and top1.agreement == 1.0
    assert top1.revealed == {"alice": "top1"} and top1.max_abs_error is None and top1.outputs == {}
    saved = load_file(str(output_path(config, "alice")))
    assert list(saved) == ["classes"] and saved["classes"].dtype == torch.int64 and saved["classes"].shape == (40, 1)
    assert int(saved["classes"].min()) >= 0 and int(saved["classes"].max()) <= 9


@pytest.mark.parametrize("comparisons", ["circuits", "fss"])
def test_top3_reveals_the_three_best_classes_in_order(tmp_path, comparisons):
    # three secure argmaxes on shares: with fss, a maximum tree, an equality and the
    # first tied position, one round each
    from safetensors.torch import load_file

    from smpc.model import zoo
    from smpc.runfiles import output_path

    # with the dealer in both modes, so with its exact truncation: CrypTen's local one
    # (randomness: local) wraps now and then, and one wrapped logit reorders a row
    config_path = write_config(tmp_path, samples=12, batch_size=12, dealer=True, protocol={"comparisons": comparisons})
    doc = yaml.safe_load(config_path.read_text())
    doc["parties"][0]["reveal"] = "top3"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = load_config(config_path)
    run(config, echo=False)
    classes = load_file(str(output_path(config, "alice")))["classes"]
    model = zoo.build("digits_cnn")
    artifacts.load_weights(model, WEIGHTS)
    data = artifacts.load_data(tmp_path / "data0.safetensors", (1, 8, 8))
    with torch.no_grad():
        logits = model.eval()(data.inputs)
    # the classes picked hold the three best plaintext logits, in order; two classes whose
    # logits are closer than the fixed-point error (about 0.01 here) may come either way
    assert classes.shape == (12, 3) and all(len(set(row)) == 3 for row in classes.tolist())
    assert (logits.gather(1, classes) - logits.topk(3, dim=1).values).abs().max() < 0.05


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["parties"][0].update(reveal="top11"),
            "parties[0].reveal: top11 needs a first output of shape [batch, classes] with at least 11 classes; "
            "the model's output has shape [10, 10]",
        ),
        (lambda d: d["parties"][1].update(reveal="top1"), "parties[1].reveal: only for a party with role output"),
        (
            lambda d: d["parties"][0].update(reveal="best"),
            "parties[0].reveal: expected 'logits' or 'topK' with K 1..100",
        ),
    ],
)
def test_a_reveal_the_output_cannot_support_is_one_line(tmp_path, change, message):
    config_path = write_config(tmp_path, samples=10, batch_size=10)
    doc = yaml.safe_load(config_path.read_text())
    change(doc)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = subprocess.run(SMPC + ["launch", str(config_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.splitlines()[0], result.stderr
