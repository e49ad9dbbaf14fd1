"""The application: the `smpc` command table (launch.cli), a service's supervision
(launch.serve) and studies (launch.study: `smpc bench`).

Running a config from Python is the library's: `smpc.runs.runner.run`, re-exported here
as it always was:

    from launch import load_config, run
    report = run(load_config("configs/local-2pc.yaml"))
    print(report.agreement, report.parties["bob"]["bytes_sent"])

Studies (`smpc bench`): `run_study(load_study("configs/studies/quick.yaml"), Path("out"))`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Report", "load_config", "load_study", "run", "run_study"]


def __getattr__(name: str) -> Any:
    # imported on first use: every process the launcher starts runs `python -m launch`,
    # which should not pay for the study machinery (plots, tqdm)
    if name in ("Report", "run"):
        from smpc.runs import runner

        return getattr(runner, name)
    if name == "load_config":
        from smpc.config import load_config

        return load_config
    if name == "load_study":
        from launch.study.spec import load_study

        return load_study
    if name == "run_study":
        from launch.study.bench import run_study

        return run_study
    raise AttributeError(f"module 'launch' has no attribute {name!r}")
