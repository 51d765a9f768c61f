"""Keeping builds offline: a network namespace when the system allows it, dead proxies always."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

DEAD_PROXY = "http://127.0.0.1:9"
"""A proxy that refuses every connection (the discard port, closed on any sane host)."""
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")


# ------------------------------------------------------------------ offline guard


_ISOLATION: list[list[str]] = []


def network_isolation() -> list[str]:
    """The command prefix that runs a program without network, or [] when unavailable.

    ``unshare -n`` (root) or ``unshare -rn`` (an unprivileged user namespace) gives
    the build a network namespace with only a down loopback interface: connecting
    anywhere fails at once.  Probed once per process by running ``true`` under it.
    """
    if not _ISOLATION:
        prefix: list[str] = []
        unshare = shutil.which("unshare")
        if unshare is not None and sys.platform.startswith("linux"):
            flags = "-n" if os.geteuid() == 0 else "-rn"
            try:
                ok = (
                    subprocess.run(
                        [unshare, flags, "--", "true"], capture_output=True, timeout=10
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                prefix = [unshare, flags, "--"]
        _ISOLATION.append(prefix)
    return list(_ISOLATION[0])


def offline_environ(base: Mapping[str, str]) -> dict[str, str]:
    """*base* without proxies or pip indexes, with a dead proxy and pip set to --no-index."""
    env = {
        k: v
        for k, v in base.items()
        if k.lower() not in (*_PROXY_VARS, "no_proxy") and not k.startswith("PIP_")
    }
    for var in _PROXY_VARS:
        env[var] = env[var.upper()] = DEAD_PROXY
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_OFFLINE"] = "1"
    return env
