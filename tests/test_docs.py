"""The documentation site builds strictly (a broken link, anchor, reference or include
fails the build), its configuration reference lists exactly the schema's keys, and the
README stays a front door."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from smpc import config as schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == []
    return out


def schema_keys(model: type[BaseModel] = schema.Config, prefix: str = "") -> set[str]:
    """Every key path of the schema, walked here independently of the page's generator."""
    keys = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}.{name}" if prefix else name
        keys.add(path)
        annotation = field.annotation
        listed = typing.get_origin(annotation) is tuple
        for inner in (annotation, *typing.get_args(annotation)):
            for cand in (inner, *typing.get_args(inner)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    keys |= schema_keys(cand, f"{path}[]" if listed else path)
    return keys


def test_the_site_builds_strictly_with_every_kind_of_page(site):
    for page in (
        "tutorials/demo",
        "tutorials/your-model",
        "tutorials/service",
        "how-to/two-hosts",
        "how-to/serving",
        "explanation/architecture",
        "explanation/states",
        "explanation/security",
        "reference/config",
        "reference/cli",
        "reference/api",
        "reference/errors",
    ):
        assert (site / page / "index.html").is_file(), page


def test_config_reference_lists_exactly_the_schema_keys(site):
    page = html.unescape((site / "reference" / "config" / "index.html").read_text())
    table_keys = set(re.findall(r"<tr>\s*<td><code>([a-z_.\[\]]+)</code></td>", page))
    assert table_keys == schema_keys()
    assert {"batch_size", "parties[].name", "serving.max_batch", "protocol.functions.exp_iterations"} <= table_keys


def test_cli_reference_holds_every_command_help(site):
    page = html.unescape((site / "reference" / "cli" / "index.html").read_text())
    for usage in (
        "usage: smpc launch",
        "usage: smpc party",
        "usage: smpc serve",
        "usage: smpc query",
        "usage: smpc model pack",
        "usage: smpc keys init",
        "usage: smpc bench",
        "usage: smpc dealer",
    ):
        assert usage in page, usage


def test_api_reference_renders_the_docstrings(site):
    page = html.unescape((site / "reference" / "api" / "index.html").read_text())
    assert (
        "Run `model` on `inputs` privately" in page or "Run <code>model</code> on <code>inputs</code> privately" in page
    )
    assert "Client" in page


def test_results_pages_are_included_not_typed(site):
    page = html.unescape((site / "explanation" / "performance" / "index.html").read_text())
    assert page.count("Written by ") >= 5  # each table under the command that wrote it


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
    for example in re.findall(r"`(examples/[a-z_]+\.py)`", readme):
        assert (ROOT / example).is_file(), example


def test_a_results_page_holds_what_the_run_printed_under_its_command(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import results_page

    monkeypatch.setattr(results_page, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/some_bench.py", "--rows", "3"])
    with results_page.results_page("some"):
        print("setting   seconds\nlenet5      0.25")
    text = (tmp_path / "some.md").read_text()
    assert text.startswith("<!-- written by python benchmarks/some_bench.py --rows 3; do not edit: run it again -->\n")
    assert "Written by `python benchmarks/some_bench.py --rows 3` on " in text
    assert text.endswith("```\nsetting   seconds\nlenet5      0.25\n```\n")
    assert "lenet5      0.25" in capsys.readouterr().out  # still printed as it ran

    with pytest.raises(RuntimeError):  # a run that fails leaves the last good page as it was
        with results_page.results_page("some"):
            print("half a table")
            raise RuntimeError("the service did not start")
    assert (tmp_path / "some.md").read_text() == text
    assert list(tmp_path.iterdir()) == [tmp_path / "some.md"]
