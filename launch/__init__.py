"""The launcher: `smpc launch CONFIG` on the command line, `launch.run` from Python.

    from launch import load_config, run
    report = run(load_config("configs/local-2pc.yaml"))
    print(report.agreement, report.parties["bob"]["bytes_sent"])

Studies (`smpc bench`): `run_study(load_study("configs/studies/quick.yaml"), Path("out"))`.
"""

from launch.bench import run_study
from launch.runner import Report, run
from launch.study import load_study
from smpc.config import load_config

__all__ = ["Report", "load_config", "load_study", "run", "run_study"]
