"""Malformed configs as a new user or a hostile file would write them, each derived from
configs/local-2pc.yaml, each through `smpc launch`: one `error:` line with the expected
message, a non-zero exit, no traceback, nothing started. And a property test: any
mutation of a valid config either loads or raises the project's ConfigError."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import ROOT
from launch.cli import main as launch_main
from smpc.config import load_config, parse_config
from smpc.errors import ConfigError

BASE_TEXT = (ROOT / "configs" / "local-2pc.yaml").read_text()
BASE = yaml.safe_load(BASE_TEXT)


def sub(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, count)

    return change


def regex(pattern: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        out, n = re.subn(pattern, new, text, count=1, flags=re.M)
        assert n == 1, pattern
        return out

    return change


def append(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefg", "bcdefgh")
)

# (case, change of the file's text (or its bytes), expected text of the first error line)
CORPUS: list[tuple[str, Callable, str]] = [
    # wrong types
    ("port-string", sub("port: 29610", "port: abc"), "parties[0].port: expected an integer, got 'abc'"),
    ("port-float", sub("port: 29610", "port: 29610.5"), "parties[0].port: expected an integer, got 29610.5"),
    ("port-list", sub("port: 29610", "port: [1]"), "parties[0].port: expected an integer, got [1]"),
    ("batch-string", sub("batch_size: 60", "batch_size: sixty"), "batch_size: expected an integer, got 'sixty'"),
    (
        "parties-mapping",
        regex(r"^parties:\n(  - .*\n|    .*\n)+", "parties: {alice: 1}\n"),
        "parties: expected a list, got {'alice': 1}",
    ),
    (
        "roles-string",
        sub("roles: [model_owner]", "roles: model_owner"),
        "parties[1].roles: expected a list, got 'model_owner'",
    ),
    (
        "role-unknown",
        sub("roles: [model_owner]", "roles: [model_owners]"),
        "parties[1].roles[0]: expected 'model_owner', 'data_owner' or 'output', got 'model_owners'",
    ),
    ("host-list", sub("host: 127.0.0.1", "host: [127, 0]"), "parties[0].host: expected a string, got [127, 0]"),
    (
        "input-shape-string",
        sub("input_shape: [1, 8, 8]", "input_shape: 1x8x8"),
        "model.input_shape: expected a list, got '1x8x8'",
    ),
    (
        "input-shape-float",
        sub("input_shape: [1, 8, 8]", "input_shape: [1, 8.5, 8]"),
        "model.input_shape[1]: expected an integer, got 8.5",
    ),
    (
        "precision-string",
        sub("precision_bits: 16", "precision_bits: high"),
        "protocol.precision_bits: expected an integer, got 'high'",
    ),
    (
        "timeouts-list",
        regex(r"^timeouts:\n(  .*\n)+", "timeouts: [60, 30]\n"),
        "timeouts: expected a mapping, got [60, 30]",
    ),
    ("version-string", sub("version: 1", "version: one"), "version: expected 1, got 'one'"),
    (
        "randomness-int",
        sub("randomness: dealer ", "randomness: 3 "),
        "randomness: expected 'local', 'dealer' or 'two-party', got 3",
    ),
    ("transport-bad", append("transport: ssl\n"), "transport: expected 'gloo' or 'tls', got 'ssl'"),
    ("name-int", sub("name: alice", "name: 7"), "parties[0].name: expected a string, got 7"),
    # booleans for numbers
    ("port-true", sub("port: 29610", "port: true"), "parties[0].port: expected an integer, got True"),
    ("batch-false", sub("batch_size: 60", "batch_size: false"), "batch_size: expected an integer, got False"),
    ("op-s-yes", sub("op_s: 30", "op_s: yes"), "timeouts.op_s: expected a number, got True"),
    (
        "precision-true",
        sub("precision_bits: 16", "precision_bits: true"),
        "protocol.precision_bits: expected an integer, got True",
    ),
    ("dealer-port-on", sub("port: 29612", "port: on"), "dealer.port: expected an integer, got True"),
    (
        "shape-true",
        sub("input_shape: [1, 8, 8]", "input_shape: [true, 8, 8]"),
        "model.input_shape[0]: expected an integer, got True",
    ),
    # out of range
    ("port-zero", sub("port: 29610", "port: 0"), "parties[0].port: expected a value >= 1, got 0"),
    ("port-huge", sub("port: 29610", "port: 70000"), "parties[0].port: expected a value <= 65535, got 70000"),
    ("port-negative", sub("port: 29611", "port: -5"), "parties[1].port: expected a value >= 1, got -5"),
    ("batch-zero", sub("batch_size: 60", "batch_size: 0"), "batch_size: expected a value >= 1, got 0"),
    (
        "precision-low",
        sub("precision_bits: 16", "precision_bits: 2"),
        "protocol.precision_bits: expected a value >= 8, got 2",
    ),
    (
        "precision-high",
        sub("precision_bits: 16", "precision_bits: 40"),
        "protocol.precision_bits: expected a value <= 24, got 40",
    ),
    ("op-s-zero", sub("op_s: 30", "op_s: 0"), "timeouts.op_s: expected a value > 0.0, got 0"),
    ("connect-negative", sub("connect_s: 60", "connect_s: -1"), "timeouts.connect_s: expected a value > 0.0, got -1"),
    ("op-s-inf", sub("op_s: 30", "op_s: .inf"), "timeouts.op_s: expected a finite number, got inf"),
    ("op-s-nan", sub("op_s: 30", "op_s: .nan"), "timeouts.op_s: expected a finite number, got nan"),
    ("run-s-minus-inf", sub("run_s: 900", "run_s: -.inf"), "timeouts.run_s: expected a finite number, got -inf"),
    (
        "shape-zero",
        sub("input_shape: [1, 8, 8]", "input_shape: [1, 0, 8]"),
        "model.input_shape: expected positive dimensions, got [1, 0, 8]",
    ),
    # duplicate keys and names
    ("duplicate-top-key", append("batch_size: 30\n"), "malformed YAML: line 31, column 1: duplicate key 'batch_size'"),
    (
        "duplicate-party-key",
        sub("    port: 29610\n", "    port: 29610\n    port: 29615\n"),
        "malformed YAML: line 9, column 5: duplicate key 'port'",
    ),
    (
        "duplicate-nested-key",
        sub("  op_s: 30\n", "  op_s: 30\n  op_s: 31\n"),
        "malformed YAML: line 29, column 3: duplicate key 'op_s'",
    ),
    ("duplicate-party-name", sub("name: bob", "name: alice"), "parties: party name 'alice' is used more than once"),
    (
        "duplicate-address",
        sub("port: 29611", "port: 29610"),
        "parties: address 127.0.0.1:29610 is used by more than one party",
    ),
    (
        "dealer-address-is-a-party",
        sub("port: 29612", "port: 29611"),
        "dealer: address 127.0.0.1:29611 is also a party's address",
    ),
    ("name-dealer", sub("name: bob", "name: dealer"), "parties[1].name: 'dealer' is reserved for the dealer process"),
    (
        "name-upper",
        sub("name: bob", "name: Bob"),
        "parties[1].name: expected a lower-case name (letters, digits, '-', '_'), got 'Bob'",
    ),
    # missing and unknown keys
    ("missing-host", sub("    host: 127.0.0.1\n", "", 1), "parties[0].host: required key is missing"),
    ("missing-parties", regex(r"^parties:\n(  - .*\n|    .*\n)+", ""), "parties: required key is missing"),
    ("missing-model", regex(r"^model:\n(  .*\n)+", ""), "model: required key is missing"),
    (
        "missing-weights",
        sub("    weights: ../models/digits_cnn.safetensors\n", ""),
        "parties[1].weights: required for the model owner",
    ),
    (
        "missing-data",
        sub("    data: ../data/digits-test.safetensors\n", ""),
        "parties[0].data: required for the data owner",
    ),
    ("missing-dealer", regex(r"^dealer:\n(  .*\n)+", ""), "dealer: required when randomness is 'dealer'"),
    ("unknown-top-key", append("bogus: 1\n"), "bogus: unknown key"),
    (
        "unknown-party-key",
        sub("    roles: [model_owner]\n", "    roles: [model_owner]\n    rolez: []\n"),
        "parties[1].rolez: unknown key; did you mean roles?",
    ),
    ("typo-batch", sub("batch_size: 60", "batchsize: 60"), "batchsize: unknown key; did you mean batch_size?"),
    (
        "no-output-role",
        sub("roles: [data_owner, output]", "roles: [data_owner]"),
        "parties: expected at least one party with role output",
    ),
    (
        "no-model-owner",
        sub("roles: [model_owner]", "roles: []"),
        "parties: expected exactly one party with role model_owner, found 0",
    ),
    # missing or wrong-kind files
    (
        "weights-missing",
        sub("digits_cnn.safetensors", "nothing.safetensors"),
        "models/nothing.safetensors: weights file not found",
    ),
    (
        "data-missing",
        sub("digits-test.safetensors", "nothing.safetensors"),
        "data/nothing.safetensors: data file not found",
    ),
    (
        "weights-is-a-folder",
        sub("../models/digits_cnn.safetensors", "../data"),
        "data: a model directory must be verified: set model.public_key in the config",
    ),
    (
        "data-is-a-folder",
        sub("../data/digits-test.safetensors", "../models"),
        "models: is a folder; expected a safetensors data file",
    ),
    (
        "weights-not-safetensors",
        sub("../models/digits_cnn.safetensors", "../configs/local-2pc.yaml"),
        "configs/local-2pc.yaml: not a readable safetensors weights file",
    ),
    (
        "run-dir-is-a-file",
        sub("run_dir: ../runs/local-2pc", "run_dir: ../configs/local-2pc.yaml"),
        "configs/local-2pc.yaml is a file; expected a folder (created when missing)",
    ),
    (
        "unknown-architecture",
        sub("architecture: digits_cnn", "architecture: resnet9000"),
        "unknown-architecture.yaml: model.architecture: unknown architecture 'resnet9000' (known: ",
    ),
    (
        "wrong-input-shape",
        sub("input_shape: [1, 8, 8]", "input_shape: [1, 9, 9]"),
        "inputs have shape [360, 1, 8, 8], expected [N, 1, 9, 9] (model.input_shape is [1, 9, 9])",
    ),
    # huge sizes
    ("batch-huge", sub("batch_size: 60", "batch_size: 1000000000000"), "batch_size: expected a value <= 65536"),
    (
        "shape-huge",
        sub("input_shape: [1, 8, 8]", "input_shape: [100000, 100000, 100000]"),
        "model.input_shape: expected at most 8 dimensions and 16777216 values per sample",
    ),
    ("name-huge", sub("name: bob", "name: " + "b" * 5000), "parties[1].name: expected a lower-case name"),
    ("file-huge", append("# " + "x" * (1 << 20) + "\n"), "config file of 1049495 bytes; expected at most 1048576"),
    # YAML bombs, tags, junk
    (
        "alias-bomb",
        lambda text: BOMB + text.replace("version: 1", "version: *h"),
        "more than 32 aliases (*name): refused",
    ),
    (
        "python-tag",
        sub("batch_size: 60", 'batch_size: !!python/object/apply:os.system ["true"]'),
        "malformed YAML: line 19, column 13: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    (
        "unknown-tag",
        sub("batch_size: 60", "batch_size: !evil 60"),
        "could not determine a constructor for the tag '!evil'",
    ),
    (
        "binary-tag",
        sub("batch_size: 60", "batch_size: !!binary aGVsbG8="),
        "batch_size: expected an integer, got b'hello'",
    ),
    ("not-a-mapping", lambda text: "- just\n- a list\n", "expected a mapping at the top level, got list"),
    ("empty-file", lambda text: "", "expected a mapping at the top level, got an empty file"),
    (
        "tab-indent",
        sub("  - name: alice", "\t- name: alice"),
        "malformed YAML: line 6, column 1: found character '\\t' that cannot start any token",
    ),
    (
        "unclosed-bracket",
        sub("roles: [model_owner]", "roles: [model_owner"),
        "malformed YAML: line 15, column 12: expected ',' or ']', but got ':'",
    ),
    ("binary-junk", lambda text: bytes(range(256)) * 4, "not a text (UTF-8) config file"),
    ("nul-bytes", lambda text: text.replace("version: 1", "version: 1\x00"), "NUL bytes"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    # configs/x.yaml with ../models and ../data beside it, as in the repository
    root = tmp_path_factory.mktemp("corpus")
    (root / "configs").mkdir()
    for name in ("models", "data"):
        (root / name).symlink_to(ROOT / name)
    (root / "configs" / "local-2pc.yaml").write_text(BASE_TEXT)
    return root


def _write_case(path: Path, change: Callable) -> Path:
    # the demo config changed by one corpus case (text, or raw bytes for junk)
    changed = change(BASE_TEXT)
    path.write_bytes(changed) if isinstance(changed, bytes) else path.write_text(changed)
    return path


def test_the_corpus_is_large_and_distinct():
    assert len(CORPUS) >= 60 and len({case for case, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case, change, expected", CORPUS, ids=[c for c, _, _ in CORPUS])
def test_every_malformed_config_is_one_error_line(workdir, capsys, case, change, expected):
    path = _write_case(workdir / "configs" / f"{case}.yaml", change)
    started = time.monotonic()
    code = launch_main(["launch", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and time.monotonic() - started < 20
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors, err
    assert expected in errors[0], (errors[0], expected)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case", ["port-true", "alias-bomb", "binary-junk", "duplicate-top-key", "python-tag", "weights-missing"]
)
def test_from_the_command_line_too(workdir, case):
    change, expected = {c: (f, e) for c, f, e in CORPUS}[case]
    path = _write_case(workdir / "configs" / f"cli-{case}.yaml", change)
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())", "launch", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr.splitlines()[0]


# values a mutation may put anywhere: wrong types, extremes, non-finite numbers, junk
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _paths(doc, prefix=()):
    # every key path of the document (mapping keys and list indices)
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


PATHS = list(_paths(BASE))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "drop", "rename"]), _JUNK), min_size=1, max_size=4
    )
)
def test_any_mutation_loads_or_is_a_config_error(mutations):
    import copy

    doc = copy.deepcopy(BASE)
    for path, how, value in mutations:
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            if how == "set":
                parent[key] = value
            elif how == "drop":
                del parent[key]
            elif isinstance(parent, dict):
                parent[str(value)[:12] or "k"] = parent.pop(key)
        except (KeyError, IndexError, TypeError):
            continue  # the path no longer exists after an earlier mutation
    try:
        parse_config(doc, "x.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("x.yaml") and "Traceback" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400))
def test_any_bytes_as_a_config_file_load_or_are_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))
