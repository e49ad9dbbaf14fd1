"""Every user-facing exception is an SmpcError with a code of its own, and a process's
failure travels as one typed record (PartyFailure) that the process writes and the
launcher reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness import write_config
from launch.cli import main
from smpc import errors, wire
from smpc.config import load_config
from smpc.dealer import states
from smpc.errors import ArtifactError, PartyError
from smpc.records import INTERNAL, PartyFailure, PartyResult
from smpc.runfiles import error_path
from smpc.serve import client, queries

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_gen"))
import reference  # noqa: E402  (docs/_gen/reference.py, which the site runs at every build: it lists the errors)


def test_every_error_is_an_smpc_error_with_a_code_of_its_own():
    found = reference.error_classes()
    for cls in (
        wire.WireError,
        wire.PeerError,
        wire.ConnectionClosed,
        states.ProtocolError,
        states.Refusal,
        states.SettingsError,
        queries.QueryFailed,
        client.ServiceError,
        errors.ConfigError,
    ):
        assert cls in found
    for cls in found:
        assert "code" in vars(cls), f"{cls.__qualname__} inherits its code"
        doc = (cls.__doc__ or "").split("\n\n")
        assert len(doc) >= 2, f"{cls.__qualname__}: its docstring says what happened, then what to do"
    codes = [cls.code for cls in found]
    assert len(codes) == len(set(codes)) and INTERNAL not in codes


def test_a_failure_record_round_trips_and_names_its_code(tmp_path):
    try:
        raise ArtifactError("data.safetensors: not found")
    except ArtifactError as exc:
        errors.mark_failure(exc)
        failure = PartyFailure.of("alice", exc)
    assert (failure.party, failure.message, failure.code) == ("alice", "data.safetensors: not found", "artifact")
    path = tmp_path / "alice.error.json"
    failure.write(path)
    assert PartyFailure.read(path) == failure
    assert not list(tmp_path.glob("*.tmp"))  # written whole, through a temporary file

    bug = PartyFailure.of("bob", RuntimeError("a bug\nsecond line"))
    assert (bug.code, bug.message) == (INTERNAL, "RuntimeError: a bug")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{"party": "alice", "message": "m", "time": "soon", "code": "x"}',
        '{"party": "a", "message": "m", "time": NaN, "code": "x"}',
    ],
)
def test_a_damaged_failure_record_is_named_not_trusted(tmp_path, text):
    path = tmp_path / "alice.error.json"
    path.write_text(text)
    with pytest.raises(PartyError, match=r"alice\.error\.json: not a failure record"):
        PartyFailure.read(path)


RESULT = dict(
    party="alice", rank=0, samples=3, connect_s=1, offline_s=0.5, online_s=1.0, wall_s=2.0, rounds=4,
    bytes_sent=5, comm_time_s=0.1, comparisons="circuits", truncation="local", comparisons_bytes=1,
    comparisons_rounds=1, truncations_bytes=0, truncations_rounds=0, peak_rss_mib=100.0, random_bytes=8,
    layers=[], bytes_per_peer={"bob": 3},
)  # fmt: skip


def test_a_result_record_round_trips_leaving_out_what_a_party_lacks(tmp_path):
    path = tmp_path / "alice.result.json"
    result = PartyResult(**RESULT)
    result.write(path)
    assert PartyResult.read(path) == result
    assert "accuracy_mpc" not in json.loads(path.read_text())  # None: left out
    assert result.reported() == {k: RESULT[k] for k in PartyResult.REPORTED if k in RESULT}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"rank": "0"}, "rank is str, not int"),
        ({"online_s": True}, "online_s is bool, not float"),
        ({"layers": {}}, "layers is dict, not list[dict[str, Any]]"),
        ({"bytes_per_peer": [3]}, "bytes_per_peer is list, not dict[str, int] | None"),
        ({"accuracy_mpc": "high"}, "accuracy_mpc is str, not float | None"),
        ({"colour": "red"}, "unknown fields ['colour']"),
        ({"rank": None}, "rank is NoneType, not int"),
    ],
)
def test_a_result_record_of_the_wrong_types_is_named_not_trusted(tmp_path, change, expected):
    path = tmp_path / "alice.result.json"
    path.write_text(json.dumps({**RESULT, **change}))
    with pytest.raises(PartyError) as caught:
        PartyResult.read(path)
    assert str(caught.value) == f"{path}: not a party's result record ({expected})"


def test_a_party_that_fails_writes_its_record_with_the_code(tmp_path, capsys):
    config_path = write_config(tmp_path)
    (tmp_path / "data0.safetensors").write_bytes(b"not a safetensors file")
    assert main(["party", str(config_path), "--name", "alice", "--no-progress"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(error_path(load_config(config_path), "alice").read_text())
    assert record["party"] == "alice" and record["code"] == "artifact"
    assert line == f"error: {record['message']}"


def test_every_code_has_its_documentation_page():
    codes = {cls.code for cls in reference.error_classes()}
    assert codes == {page.stem for page in (ROOT / "docs" / "reference" / "errors").glob("*.md")}
    for cls in reference.error_classes():
        page = reference.error_page(cls)
        assert page.startswith(f"# Error `{cls.code}`") and "**What to do.** " in page
        assert page.split("**What to do.** ")[1].split("\n")[0].strip(), cls.code
