"""Running a config on this machine: supervising its processes (processes), a run and its
report (runner), a model run on shares in one call (simulate, `smpc.simulate`), and the
cost profile (profile). The processes are started as `python -m launch COMMAND`, the
commands a deployment runs on each host."""

__all__ = ["processes", "profile", "runner", "simulate"]
