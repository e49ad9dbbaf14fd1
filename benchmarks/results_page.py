"""A benchmark's figures as a page of the documentation site, written by the run itself.

`with results_page("serving"):` copies everything the benchmark prints to standard
output into `docs/results/serving.md`, under the command that made it, the date, the
machine and the code revision. The docs include these pages; nobody edits them by hand,
so a figure in the docs is always one a command printed.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


class _Tee(io.TextIOBase):
    """Writes go to the terminal as before and into a buffer for the page."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        # the results pages themselves do not count as a change of the code measured
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + (" with local changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def page(command: str, output: str, fenced: bool = True) -> str:
    """The Markdown of a results page: provenance first, then the output verbatim (in a
    code block, or as Markdown when the script prints a Markdown table)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!-- written by {command}; do not edit: run it again -->\n"
        f"Written by `{command}` on {when}: {os.cpu_count()} cores ({_cpu()}), "
        f"Python {platform.python_version()}, code at {_revision()}.\n\n"
        + (f"```\n{output.rstrip()}\n```\n" if fenced else f"{output.rstrip()}\n")
    )


@contextlib.contextmanager
def results_page(name: str, fenced: bool = True) -> Iterator[None]:
    """Tee standard output into docs/results/NAME.md (written atomically when the run ends
    without an exception; a failed run leaves the last good page in place). `fenced`:
    the output goes into a code block; False for a script that prints Markdown."""
    tee = _Tee(sys.stdout)
    command = "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    with contextlib.redirect_stdout(tee):
        yield
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{name}.md"
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(page(command, tee.buffer_.getvalue(), fenced))
    tmp.replace(target)
    shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
    print(f"results page written to {shown}")
