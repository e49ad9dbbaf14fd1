"""A supervised process leaves when its supervisor is gone.

`smpc launch` and `smpc serve` start every party and the dealer in a session of its own
(so that a Ctrl-C in the terminal reaches the supervisor alone, which then stops them in
order). The price: when the supervisor itself dies without stopping them (SIGKILL, a
crash), nothing else would: they are adopted by init and go on serving. So the
supervisor names itself in the environment (`SMPC_SUPERVISOR_PID`), and each child
watches that its parent is still that process; once it is not, the child stops as on
SIGTERM (a service drains, a one-off party ends) and leaves for good after a grace.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV = "SMPC_SUPERVISOR_PID"
POLL_S = 0.5
# of timeouts.op_s: a service's drain (and the dealer's goodbye) must fit in it, and
# the whole exit within op_s
GRACE_FRACTION = 0.75


def supervised_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a supervised child of this process."""
    return {**env, ENV: str(os.getpid())}


def watch(grace_s: float) -> bool:
    """When this process was started by a supervisor (see `supervised_env`), watch it in a
    daemon thread: once it is gone, SIGTERM this process, and exit after `grace_s` if
    that did not end it. Returns whether a watch started."""
    expected = os.environ.get(ENV)
    if expected is None or not expected.isdigit() or os.getppid() != int(expected):
        return False  # started by hand (one party on its own host): its own supervisor decides
    supervisor = int(expected)

    def run() -> None:
        while os.getppid() == supervisor:
            time.sleep(POLL_S)
        try:  # the supervisor read this process's output: it may have nowhere to go now
            print(f"the supervisor (pid {supervisor}) is gone: stopping", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=run, name="parent-watch", daemon=True).start()
    return True
