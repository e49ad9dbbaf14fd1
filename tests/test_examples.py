"""The scripts in examples/ run as a user runs them (a fresh process each, from the
repository's root) and do what they say: exit 0, with the figures they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_example_is_run_here():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(
        ["simulate_hf_model.py", "organization_path.py", "service_and_client.py"]
    )


def test_simulate_hf_model():
    out = run_example("simulate_hf_model.py")
    cosine = float(out.split("worst cosine to plain PyTorch ")[1].split(",")[0])
    assert cosine > 0.999
    assert "[alice] online phase" in out  # smpc.simulate prints the run's phases


def test_organization_path(tmp_path):
    out = run_example("organization_path.py", "--work", str(tmp_path))
    for step in (
        "smpc keys init",
        "smpc model pack",
        "smpc model calibrate",
        "smpc model sign",
        "smpc model verify",
        "smpc launch",
    ):
        assert f"$ {step}" in out
    assert (tmp_path / "model" / "calibration.json").is_file()
    assert (tmp_path / "model" / "model.sig").is_file()
    assert "top-1 agreement    100.00%" in out
    assert (tmp_path / "runs" / "alice.output.safetensors").is_file()


def test_service_and_client():
    out = run_example("service_and_client.py")
    error = float(out.split("max |error| against plain PyTorch: ")[1].split()[0])
    assert error < 1e-3
