"""The warnings focalrec gives."""

from __future__ import annotations

__all__ = ["SlowPathWarning"]


class SlowPathWarning(UserWarning):
    """The loss runs on a slower path than this machine could run (said once per process).

    The message names the reason and the fix; ``FOCALREC_BACKEND=torch`` chooses the torch path
    and silences it, and ``warnings.filterwarnings("ignore", category=SlowPathWarning)`` too.
    """
