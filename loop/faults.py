"""Fault injection for resume tests, through one environment variable.

``CSLAB_FAULT="<round>:<status>[,<round>:<status>...]"`` stops the run right
after round ``<round>`` has recorded ``<status>`` (``proposed``, ``measured``,
``fitted`` or ``scored``). With ``CSLAB_FAULT_MODE=kill`` the process kills
itself with SIGKILL (what ``kill -9`` does); otherwise :class:`InjectedCrash`
(a ``BaseException``, so nothing catches it by accident) is raised. Either
way the run folder is left exactly as a crash at that point leaves it, and
``--resume`` must finish it identically.
"""

from __future__ import annotations

import os
import signal

ENV = "CSLAB_FAULT"
MODE_ENV = "CSLAB_FAULT_MODE"


class InjectedCrash(BaseException):
    """Raised at an injected fault point."""


def checkpoint(round_index: int, status: str) -> None:
    """Crash here if ``CSLAB_FAULT`` names this round and status."""
    spec = os.environ.get(ENV, "")
    points = {p.strip() for p in spec.split(",") if p.strip()}
    if f"{round_index}:{status}" not in points:
        return
    if os.environ.get(MODE_ENV) == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedCrash(f"injected fault after round {round_index} {status}")
