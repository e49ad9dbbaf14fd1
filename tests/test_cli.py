"""`smpc`'s exit codes, alike for every subcommand: 2 and one `error:` line for the
user's mistake, 1 and a traceback for an internal error."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from harness import write_config, write_serve_config
from launch.cli import main
from smpc.errors import ConfigError


def _mistake(path, **changes):
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "command", [["serve"], ["serve", "--name", "alice"], ["serve", "--name", "dealer"], ["launch"]]
)
def test_a_config_with_a_mistake_exits_2_from_every_command(tmp_path, capsys, command):
    path = _mistake(write_serve_config(tmp_path) if command[0] == "serve" else write_config(tmp_path), batch_sise=4)
    assert main([command[0], str(path), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: batch_sise: unknown key; did you mean batch_size?\n"


def test_serving_a_one_off_config_exits_2_at_once_even_as_the_dealer(tmp_path, capsys):
    path = write_config(tmp_path, dealer=True)  # no serving section
    started = time.monotonic()
    assert main(["serve", str(path), "--name", "dealer"]) == 2
    assert time.monotonic() - started < 10  # not after timeouts.connect_s
    assert capsys.readouterr().err == f"error: {path}: serving: required by `smpc serve` (the client API's settings)\n"


def test_a_mistake_a_subcommand_lets_through_exits_2(monkeypatch, capsys):
    def refuse(path):
        raise ConfigError("x.yaml: tls: required")

    monkeypatch.setattr("smpc.sealed.load_key", refuse)
    assert main(["open", "f.sealed", "--key", "k"]) == 2
    assert capsys.readouterr().err == "error: x.yaml: tls: required\n"


def test_an_internal_error_exits_1_with_its_traceback(monkeypatch, capsys):
    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("smpc.runs.runner.run", crash)
    assert main(["launch", "config.yaml"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.endswith("error: internal error (RuntimeError): please report it with the traceback above\n")


def test_an_unknown_command_or_none_is_a_usage_mistake(capsys):
    assert main(["lanch"]) == 2 and main([]) == 2
    assert "smpc: unknown command 'lanch'" in capsys.readouterr().err


# a thread that is inside torch whenever the process ends, as a peer's reader can be
_BUSY_IN_TORCH = """
import sys, threading, torch
threading.Thread(target=lambda: [torch.empty(64) for _ in iter(int, 1)], daemon=True).start()
from launch.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("command", [["party", "--name", "alice"], ["dealer"], ["serve", "--name", "alice"]])
def test_a_process_ends_with_its_code_while_a_daemon_thread_is_inside_torch(tmp_path, command):
    # the interpreter's finalization ended such a thread inside a C++ frame: SIGABRT
    # instead of exit 2 (once in a CI run of the dealer refusing a party's settings)
    missing = tmp_path / "absent.yaml"
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _BUSY_IN_TORCH, command[0], str(missing), *command[1:]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {missing}"), done.stderr
