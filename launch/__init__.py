"""The launcher: `smpc launch CONFIG` on the command line, `launch.run` from Python.

    from launch import load_config, run
    report = run(load_config("configs/local-2pc.yaml"))
    print(report.agreement, report.parties["bob"]["bytes_sent"])
"""

from launch.runner import Report, run
from smpc.config import load_config

__all__ = ["Report", "load_config", "run"]
