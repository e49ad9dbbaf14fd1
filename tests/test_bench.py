"""Studies: the study file's checks, and one real study run end to end (party
processes, a cell that fails, records, CSV, Markdown report, plots)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageStat

from harness import DATA, WEIGHTS, processes_mentioning
from launch.study import report
from launch.study import load_study, parse_study
from launch.cli import main as smpc_main
from smpc.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, doc: object, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


BAD_STUDIES = [
    (
        {"name": "s", "matrix": {"models": ["mlp"], "batchsize": [1]}},
        r"study\.yaml: matrix\.batchsize: unknown key; did you mean batch_size\?",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "parties": [1, 3]}},
        r"matrix\.parties: expected party counts 2\.\.8, got 1",
    ),
    ({"name": "s", "repetitions": 2, "matrix": {"models": ["mlp"]}}, r"repetitions: expected a value >= 3, got 2"),
    ({"name": "s", "matrix": {}}, r"matrix\.models: required key is missing"),
    ({"name": "s", "matrix": {"models": []}}, r"matrix\.models: expected a non-empty list"),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "randomness": ["ttp"]}},
        r"matrix\.randomness\[0\]: expected 'dealer', 'local' or 'two-party', got 'ttp'",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "precision_bits": [16, 30]}},
        r"matrix\.precision_bits: expected precision bits 8\.\.24, got 30",
    ),
    ({"name": "s", "matrix": {"models": ["mlp"], "batch_size": [4, 4]}}, r"matrix\.batch_size: 4 is listed twice"),
    ({"name": "s", "matrix": {"models": ["mlp", "mlp"]}}, r"matrix\.models: model 'mlp' is listed twice"),
    (
        {"name": "s", "matrix": {"models": [{"architecture": "torch.nn:ReLU"}]}},
        r"matrix\.models\[0\]: input_shape: required for 'torch\.nn:ReLU'",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "functions": [{"exp_iteration": 4}]}},
        r"matrix\.functions\[0\]\.exp_iteration: unknown key",
    ),
    (
        {"name": "s", "matrix": {"models": [{"architecture": "mlp", "data": "nowhere.safetensors"}]}},
        r"matrix\.models\[0\]\.data: file not found",
    ),
    ({"name": "two words", "matrix": {"models": ["mlp"]}}, r"name: expected letters, digits"),
    ("name: [unclosed\n", r"study\.yaml: malformed YAML: line 2"),
    ("- a list\n", r"study\.yaml: expected a mapping at the top level, got list"),
    (
        {
            "name": "s",
            "matrix": {"models": ["mlp"], "randomness": ["dealer", "local"], "comparisons": ["circuits", "fss"]},
        },
        r"study\.yaml: matrix: comparisons: fss runs with randomness dealer and 2 parties only",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "parties": [2, 3], "comparisons": ["fss"]}},
        r"matrix: comparisons: fss runs with randomness dealer and 2 parties only",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "randomness": ["dealer", "two-party"], "comparisons": ["ot"]}},
        r"matrix: comparisons: ot runs with randomness two-party only: make randomness \[two-party\]",
    ),
    (
        {"name": "s", "matrix": {"models": ["mlp"], "parties": [2, 3], "randomness": ["two-party"]}},
        r"matrix: randomness: two-party runs with 2 parties only: make parties \[2\]",
    ),
]


@pytest.mark.parametrize("doc,message", BAD_STUDIES)
def test_bad_study_is_one_clear_error(tmp_path, capsys, doc, message):
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message):
        load_study(path)
    assert smpc_main(["bench", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_missing_study_file(tmp_path, capsys):
    assert smpc_main(["bench", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: study file not found" in capsys.readouterr().err


def test_a_two_party_study_compares_by_ot_unless_told_otherwise():
    study = parse_study({"name": "s", "matrix": {"models": ["mlp"], "randomness": ["two-party"]}})
    assert [c.comparisons for c in study.cells()] == ["ot"]
    both = {"models": ["mlp"], "randomness": ["two-party"], "comparisons": ["ot", "circuits"]}
    assert [c.comparisons for c in parse_study({"name": "s", "matrix": both}).cells()] == ["ot", "circuits"]


def test_cells_are_the_product_models_outermost():
    study = parse_study(
        {
            "name": "s",
            "matrix": {
                "models": ["mlp", "lenet5"],
                "parties": [2, 3],
                "batch_size": [1, 8],
                "functions": [{}, {"exp_iterations": 4}],
            },
        }
    )
    cells = study.cells()
    assert len(cells) == 2 * 2 * 2 * 2
    assert [c.index for c in cells] == list(range(16))
    assert [c.model.name for c in cells[:8]] == ["mlp"] * 8
    assert (cells[0].parties, cells[0].batch_size, cells[0].functions_label) == (2, 1, "default")
    assert cells[1].functions_label == "exp_iterations=4"
    assert cells[0].model.shape == (1, 28, 28)


def test_shipped_studies_are_valid():
    for path in sorted((ROOT / "configs" / "studies").glob("*.yaml")):
        study = load_study(path)
        assert study.cells(), path


def _cell(text: str) -> str:
    return text.strip()


def near(value: float, decimals: int) -> object:
    """What a number printed with `decimals` decimals can have been."""
    return pytest.approx(value, abs=0.5 * 10**-decimals + 1e-9)


def _table(markdown: str) -> list[dict[str, str]]:
    """The main results table of report.md as dicts by column heading."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    heads = [_cell(h) for h in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = [_cell(c) for c in line.strip("|").split("|")]
        if cells[0] == "cell":  # another table starts
            break
        if len(cells) == len(heads):
            rows.append(dict(zip(heads, cells)))
    return rows


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A real study: the trained digits CNN at two precisions (one warm-up and three
    measured runs each, real parties and dealer), and a model that cannot run."""
    tmp = tmp_path_factory.mktemp("study")
    doc = {
        "name": "test-study",
        "description": "two working cells and two that fail",
        "samples": 6,
        "warmup": 1,
        "repetitions": 3,
        "matrix": {
            "models": [
                {"architecture": "digits_cnn", "weights": str(WEIGHTS), "data": str(DATA)},
                {"architecture": "torch.nn:Hardswish", "input_shape": [4], "label": "unsupported"},
            ],
            "precision_bits": [12, 16],
            "batch_size": [3],
        },
        "timeouts": {"run_s": 300},
    }
    path = write(tmp, doc)
    out = tmp / "out"
    code = smpc_main(["bench", str(path), "--out", str(out), "--no-progress"])
    return path, out, code


def test_failing_cells_are_recorded_and_the_study_goes_on(study_run):
    _, out, code = study_run
    assert code == 2  # some cells failed, as a failed launch
    records = report.read_records(out)
    assert [r["status"] for r in records] == ["ok", "ok", "failed", "failed"]
    for r in records[2:]:
        assert "aten.hardswish is not supported" in r["error"]
    for r in records[:2]:
        assert r["error"] is None and len(r["runs"]) == 3  # the warm-up run is not among them
        assert r["samples"] == 6 and r["batches"] == 2
        assert r["env"]["torch"].startswith("2.13") and r["env"]["cpu_count"] >= 1
        assert r["env"]["threads_per_party"] == 1
        assert set(r["settings"]) >= {
            "model",
            "parties",
            "randomness",
            "transport",
            "precision_bits",
            "batch_size",
            "functions",
        }
        assert r["settings"]["trained_weights"] and r["settings"]["real_data"]
        assert r["agreement"]["min"] == 1.0 and r["accuracy_plain"]["median"] > 0.8
        assert 0 < r["plain_s"]["median"] < r["online_s"]["median"]
        assert r["online_s"]["min"] <= r["online_s"]["median"] <= r["online_s"]["max"]
        # every byte a party sent is charged to a layer, input sharing, output reveal or setup
        for name, layers in r["layers"].items():
            run = min(r["runs"], key=lambda x: abs(x["online_s"] - r["online_s"]["median"]))
            assert sum(layer["bytes_sent"] for layer in layers) == run["parties"][name]["bytes_sent"]
            assert sum(layer["rounds"] for layer in layers) == run["parties"][name]["rounds"]
            assert any(layer["layer"] == "features.0 Conv2d" for layer in layers)
        assert all(p["peak_rss_mib"]["min"] > 50 for p in r["parties"].values())
    # every cell's run config is kept and is a real smpc config
    assert (out / records[0]["config"]).is_file()
    assert not processes_mentioning(str(out))  # nothing left running


def test_error_falls_as_precision_rises(study_run):
    records = [r for r in report.read_records(study_run[1]) if r["status"] == "ok"]
    by_bits = {r["settings"]["precision_bits"]: r["max_abs_error"]["max"] for r in records}
    assert by_bits[16] < by_bits[12]


def test_report_numbers_come_from_the_records(study_run):
    _, out, _ = study_run
    records = {r["cell"]: r for r in report.read_records(out)}
    text = (out / "report.md").read_text()
    rows = _table(text)
    assert [int(row["cell"]) for row in rows] == [0, 1]  # the measured cells, in order
    for row in rows:
        r = records[int(row["cell"])]
        assert row["bits"] == str(r["settings"]["precision_bits"])
        median, lo, hi = map(float, re.match(r"([\d.]+) \[([\d.]+)-([\d.]+)\]", row["online s"]).groups())
        assert median == near(r["online_s"]["median"], 3)
        assert (lo, hi) == (near(r["online_s"]["min"], 3), near(r["online_s"]["max"], 3))
        assert float(row["ms/sample"]) == near(1000 * r["online_s_per_sample"]["median"], 2)
        assert float(row["offline s"]) == near(r["offline_s"]["median"], 3)
        assert float(row["plain ms"]) == near(1000 * r["plain_s"]["median"], 2)
        assert float(row["slowdown"]) == near(r["slowdown"]["median"], 0)
        most = max(p["bytes_sent"] for p in r["parties"].values())
        assert float(row["MiB/party"]) == near(most / 2**20, 2)
        assert int(row["rounds"]) == max(p["rounds"] for p in r["parties"].values())
        assert float(row["max abs error"]) == pytest.approx(r["max_abs_error"]["max"], rel=5e-3)
        assert float(row["agreement"].rstrip("%")) == near(100 * r["agreement"]["min"], 2)
        assert float(row["accuracy MPC"].rstrip("%")) == near(100 * r["accuracy_mpc"]["median"], 2)
    assert "## Failed cells" in text and "aten.hardswish is not supported" in text
    assert "Same in every cell: parties 2, randomness dealer, comparisons circuits, transport gloo, batch 3" in text

    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [row["status"] for row in table] == ["ok", "ok", "failed", "failed"]
    for row in table[:2]:
        r = records[int(row["cell"])]
        for key in report.STATS:
            if r[key] is not None:
                assert float(row[f"{key}_median"]) == r[key]["median"]
        assert int(row["alice_bytes_sent"]) == r["parties"]["alice"]["bytes_sent"]
    assert "aten.hardswish is not supported" in table[2]["error"]

    # the report is a function of the records alone: rebuilt from them, it is the same
    study = load_study(study_run[0])
    report.write_all(out, study)
    assert (out / "report.md").read_text() == text


def test_derived_figures_are_recomputed_from_the_raw_runs(study_run):
    # every derived number of a record (and so of the report) follows from its raw runs
    import statistics

    _, out, _ = study_run
    for r in report.read_records(out):
        if r["status"] != "ok":
            continue
        runs = r["runs"]
        ratios = [run["online_s"] / run["plain_s"] for run in runs]
        assert r["slowdown"]["median"] == pytest.approx(statistics.median(ratios), rel=1e-12)
        assert (r["slowdown"]["min"], r["slowdown"]["max"]) == pytest.approx((min(ratios), max(ratios)), rel=1e-12)
        per_sample = [run["online_s"] / r["samples"] for run in runs]
        assert r["online_s_per_sample"]["median"] == pytest.approx(statistics.median(per_sample), rel=1e-12)
        for key in ("online_s", "offline_s", "plain_s", "wall_s"):
            assert r[key]["median"] == pytest.approx(statistics.median(run[key] for run in runs), rel=1e-12)


def test_plots_are_non_empty_images(study_run):
    _, out, _ = study_run
    text = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"online_time.png", "error_vs_precision.png", "bytes_per_layer.png"}
    for png in pngs:
        assert f"]({png.name})" in text
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 150
            extrema = ImageStat.Stat(image.convert("L")).extrema[0]
            assert extrema[0] < 100 < extrema[1]  # dark marks on a light background, not blank


def test_results_are_not_overwritten_without_force(study_run, capsys):
    path, out, _ = study_run
    before = (out / "results.jsonl").read_text()
    assert smpc_main(["bench", str(path), "--out", str(out)]) == 2
    assert "results.jsonl: results of an earlier study are here (use --force" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before
    assert json.loads(before.splitlines()[0])["study"] == "test-study"


@pytest.fixture(scope="module")
def protocols_run(tmp_path_factory):
    """A real study of the two comparison protocols on the trained digits CNN."""
    tmp = tmp_path_factory.mktemp("protocols")
    doc = {
        "name": "protocols",
        "samples": 6,
        "warmup": 0,
        "repetitions": 3,
        "matrix": {
            "models": [{"architecture": "digits_cnn", "weights": str(WEIGHTS), "data": str(DATA)}],
            "comparisons": ["circuits", "fss"],
            "batch_size": [3],
        },
        "timeouts": {"run_s": 300},
    }
    out = tmp / "out"
    code = smpc_main(["bench", str(write(tmp, doc)), "--out", str(out), "--no-progress"])
    return out, code


def test_a_study_compares_the_comparison_protocols(protocols_run):
    out, code = protocols_run
    assert code == 0
    records = {r["settings"]["comparisons"]: r for r in report.read_records(out)}
    fss, circuits = records["fss"], records["circuits"]
    for r in (fss, circuits):
        assert r["status"] == "ok" and r["agreement"]["min"] == 1.0
    assert fss["parties"]["alice"]["comparisons_bytes"] < 0.1 * circuits["parties"]["alice"]["comparisons_bytes"]
    # with circuits, the dealer's material for alice (party 0) is only the truncation's (16 bytes an element)
    assert 0 < circuits["parties"]["alice"]["key_bytes"] < 0.01 * fss["parties"]["alice"]["key_bytes"]
    assert fss["dealer_s_per_batch"]["median"] > 0
    rows = {row["comparisons"]: row for row in _table((out / "report.md").read_text())}
    assert float(rows["fss"]["comparison MiB"]) == near(fss["parties"]["alice"]["comparisons_bytes"] / 2**20, 2)
    assert int(rows["circuits"]["comparison rounds"]) == circuits["parties"]["alice"]["comparisons_rounds"]
    assert float(rows["circuits"]["key MiB/party"]) < 0.01 * float(rows["fss"]["key MiB/party"])
    with Image.open(out / "comparisons.png") as image:
        assert image.width > 200 and ImageStat.Stat(image.convert("L")).extrema[0][0] < 100


def test_a_study_runs_two_parties_without_a_dealer(tmp_path):
    doc = {
        "name": "two-party",
        "samples": 6,
        "warmup": 0,
        "repetitions": 3,
        "matrix": {
            "models": [{"architecture": "digits_cnn", "weights": str(WEIGHTS), "data": str(DATA)}],
            "randomness": ["two-party"],
            "batch_size": [3],
        },
        "timeouts": {"run_s": 300},
    }
    out = tmp_path / "out"
    assert smpc_main(["bench", str(write(tmp_path, doc)), "--out", str(out), "--no-progress"]) == 0
    (record,) = report.read_records(out)
    assert record["status"] == "ok" and record["agreement"]["min"] == 1.0
    assert record["settings"]["randomness"] == "two-party" and record["settings"]["comparisons"] == "ot"
    alice = record["parties"]["alice"]
    # the offline phase (its material made with bob) is measured apart from the online traffic
    assert alice["offline_bytes"] > 10 * alice["bytes_sent"] > 0 and alice["offline_rounds"] > 0
    assert record["offline_s"]["median"] > 0
