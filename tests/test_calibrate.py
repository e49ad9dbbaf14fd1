"""Calibration (`smpc model calibrate`) and the in-protocol range checks
(`protocol.range_checks`): measured ranges, refusals that name the op and the range,
and one revealed bit per checked tensor on real party processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import smpc
from harness import ROOT, run_parties, write_program_config
from smpc import artifacts
from smpc.config import load_config
from smpc.errors import ArtifactError, ConversionError, PartyError
from smpc.runs.runner import run
from smpc.model import calibrate, owner

SMPC = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())"]
UNIT = 2.0**-16


class Wide(nn.Module):
    """A linear layer whose outputs reach the thousands, then GELU and an exp."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.fc.weight.fill_(scale)
            self.fc.bias.zero_()

    def forward(self, x):
        h = self.fc(x)
        return torch.cat([nn.functional.gelu(h), torch.exp(x[:, :2] * 0.5)], dim=-1)


def _packed(tmp_path: Path, scale: float, rows: torch.Tensor) -> Path:
    model = Wide(scale).eval()
    smpc.pack(model, (rows[:2],), tmp_path / "model")
    data = tmp_path / "sample.safetensors"
    artifacts.save_inputs(data, {"x": rows})
    return data


def test_calibrate_records_the_ranges_each_approximation_sees(tmp_path):
    rows = torch.linspace(-3, 3, 30).reshape(5, 6)
    data = _packed(tmp_path, 100.0, rows)
    calibration, path = owner.calibrate_directory(tmp_path / "model", data, margin=2.0)
    assert path == tmp_path / "model" / "calibration.json" and calibration.rows == 5
    by_op = {e.op: e for e in calibration.ops}
    hidden = rows @ torch.full((4, 6), 100.0).T
    assert by_op["gelu"].quantity == "magnitude"
    assert by_op["gelu"].low == pytest.approx(float(hidden.min())) and by_op["gelu"].high == pytest.approx(
        float(hidden.max())
    )
    exp_inputs = rows[:, :2] * 0.5
    assert (by_op["exp"].low, by_op["exp"].high) == pytest.approx((float(exp_inputs.min()), float(exp_inputs.max())))
    assert calibration.largest.high == pytest.approx(float(hidden.abs().max()))
    assert calibrate.load(tmp_path / "model") == calibration  # the file round-trips


def test_the_table_shows_whole_operation_names_and_labels_every_row():
    long = "encoder.layer.11.attention.output.dense_with_a_long_name Linear"
    calibration = calibrate.Calibration(
        "program",
        5,
        2.0,
        (
            calibrate.OpRange("gelu", long, "gelu", "magnitude", -3.0, 4.5),
            calibrate.OpRange("exp", "<model> Wide", "exp", "input", -1.5, 1.0),
        ),
        calibrate.OpRange("fc", "fc Linear", "output", "magnitude", -1490.0, 1490.0),
    )
    assert calibrate.describe(calibration).splitlines() == [
        "operation                                                              quantity           low        high",
        "encoder.layer.11.attention.output.dense_with_a_long_name Linear (gelu) magnitude           -3         4.5",
        "<model> Wide (exp)                                                     input             -1.5           1",
        "all operations: largest output (fc Linear)                             magnitude        -1490        1490",
    ]


def test_settings_that_do_not_cover_the_calibrated_ranges_are_refused_by_op(tmp_path):
    rows = torch.linspace(-3, 3, 30).reshape(5, 6)
    data = _packed(tmp_path, 1000.0, rows)  # GELU inputs reach ±1.5e4
    calibration, _ = owner.calibrate_directory(tmp_path / "model", data)
    program = smpc.model.program_format.load(tmp_path / "model")
    calibrate.check(calibration, program, 16, "where")  # ±2^20 holds 3.6e4
    with pytest.raises(
        ConversionError,
        match=(
            r"^where: <model> Wide \(gelu\): calibrated magnitude \[-1\.49e\+04, 1\.49e\+04\] x2 margin "
            r"reaches ±2\.98e\+04, beyond the ±4\.1e\+03 that protocol.precision_bits 20 holds; "
            r"protocol.precision_bits 18 covers every calibrated range$"
        ),
    ):
        calibrate.check(calibration, program, 20, "where")


def test_a_range_no_approximation_covers_is_refused_naming_it(tmp_path):
    rows = torch.linspace(-40, 40, 30).reshape(5, 6)  # exp(x/2) inputs reach 14.5, x2 margin: 15.2 > 12
    data = _packed(tmp_path, 1.0, rows)
    calibration, _ = owner.calibrate_directory(tmp_path / "model", data)
    program = smpc.model.program_format.load(tmp_path / "model")
    with pytest.raises(
        ConversionError,
        match=(
            r"^w: <model> Wide \(exp\): calibrated input \[-20, 14\.5\] x2 margin is \[-20\.7, 15\.2\], beyond the "
            r"\[-inf, 12\] its approximation covers; nothing available covers it$"
        ),
    ):
        calibrate.check(calibration, program, 16, "w")


def test_a_launch_refuses_before_anyone_starts_and_the_cli_says_so(tmp_path):
    rows = torch.linspace(-3, 3, 30).reshape(5, 6)
    data = _packed(tmp_path, 1000.0, rows)
    done = subprocess.run(
        SMPC + ["model", "calibrate", str(tmp_path / "model"), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "<model> Wide (gelu)" in done.stdout
        and f"calibrated on 5 rows (margin x2): {tmp_path / 'model' / 'calibration.json'}" in done.stdout
    )
    assert (
        done.stdout.splitlines()[3] == "all operations: largest output (fc Linear) magnitude    -1.49e+04    1.49e+04"
    )
    config = write_program_config(tmp_path, tmp_path / "model", data, batch_size=2, protocol={"precision_bits": 20})
    launched = subprocess.run(SMPC + ["launch", str(config)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert launched.returncode == 2 and "Traceback" not in launched.stderr
    line = [e for e in launched.stderr.splitlines() if e.startswith("error:")][0]
    assert (
        line.startswith(f"error: {tmp_path / 'model' / 'calibration.json'}: ")
        and "protocol.precision_bits 18 covers" in line
    )
    assert "[alice]" not in launched.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "Expecting value"),
        (json.dumps({"format": "other", "version": 1}), "expected format smpc-calibration version 1"),
        (
            json.dumps(
                {
                    "format": "smpc-calibration",
                    "version": 1,
                    "architecture": "a",
                    "rows": 1,
                    "margin": 0.5,
                    "largest": {},
                    "ops": [],
                }
            ),
            "margin must be 1..1e6",
        ),
        (
            json.dumps(
                {
                    "format": "smpc-calibration",
                    "version": 1,
                    "architecture": "a",
                    "rows": 1,
                    "margin": 2,
                    "largest": {
                        "node": "n",
                        "layer": "l",
                        "op": "output",
                        "quantity": "magnitude",
                        "low": 0,
                        "high": 1,
                    },
                    "ops": [{"node": "n", "layer": "l", "op": "system", "quantity": "input", "low": 0, "high": 1}],
                }
            ),
            "unknown operation 'system'",
        ),
    ],
)
def test_a_malformed_calibration_file_is_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "calibration.json").write_text(content)
    with pytest.raises(ArtifactError, match=rf"^{tmp_path / 'calibration.json'}: not a calibration file: .*{message}"):
        calibrate.load(tmp_path)


def test_calibrate_cli_names_what_is_missing(tmp_path):
    done = subprocess.run(
        SMPC + ["model", "calibrate", str(tmp_path), "--data", str(tmp_path / "none.safetensors")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert (
        done.returncode == 2 and done.stderr == f"error: {tmp_path / 'none.safetensors'}: sample data file not found\n"
    )


def _bits(rank: int, world_size: int) -> list[bool]:
    import crypten

    from smpc.protocols.range_check import out_of_range

    def secret(values):
        return crypten.cryptensor(torch.tensor(values), src=0)

    return [
        out_of_range(secret([0.0, 1.0, 2.0]), 0.0, 2.0),  # at both bounds: inside
        out_of_range(secret([0.0, 2.0 + 4 * UNIT]), 0.0, 2.0),  # a few units above
        out_of_range(secret([-4 * UNIT, 1.0]), 0.0, 2.0),  # a few units below
        out_of_range(secret([-1e5, 11.9]), float("-inf"), 12.0),  # open below: inside
        out_of_range(secret([12.5]), float("-inf"), 12.0),
        out_of_range(secret([-3.0, 3.0, 1e-3]), 1e-3, 3.0, absolute=True),
        out_of_range(secret([0.0, 1.0]), 1e-3, 3.0, absolute=True),  # |0| below 1e-3
        out_of_range(secret([-3.5, 1.0]), 1e-3, 3.0, absolute=True),  # |-3.5| above 3
        out_of_range(secret([[1.0, 2.0], [2.0, 1.0]] * 50), 1.0, 2.0),
    ]


def test_one_bit_per_tensor_at_the_edges_on_shares():
    results = run_parties(_bits, 2, timeout=120)
    assert results[0] == results[1] == [False, True, True, False, True, False, True, True, False]


def test_a_run_beyond_what_calibration_saw_fails_by_name_with_range_checks(tmp_path):
    rows = torch.linspace(-3, 3, 30).reshape(5, 6)
    data = _packed(tmp_path, 10.0, rows)
    owner.calibrate_directory(tmp_path / "model", data)
    far = tmp_path / "far.safetensors"
    artifacts.save_inputs(far, {"x": rows * 5})  # GELU inputs 5x what calibration saw, margin 2
    checked = write_program_config(
        tmp_path, tmp_path / "model", far, batch_size=2, dealer=True, protocol={"range_checks": True}
    )
    with pytest.raises(PartyError, match=r"range check failed: <model> Wide \(gelu\): magnitude out of \[-298, 298\]"):
        run(load_config(checked), echo=False)
    # inside the calibrated ranges the same checks pass and the answer is right
    inside = write_program_config(
        tmp_path, tmp_path / "model", data, batch_size=2, dealer=True, protocol={"range_checks": True}
    )
    report = run(load_config(inside), echo=False)
    assert min(o["min_cosine"] for o in report.outputs.values()) > 0.999
