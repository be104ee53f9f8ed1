"""Groups named in ``[control]``: looked up for the config check and for the control socket.

Apart from ``config_host`` (which the daemon forgets once the config is read, see
``startup_imports.TRANSIENT``) because the control server needs them for life.
"""

from __future__ import annotations

import grp
import os
import pwd

__all__ = ["group_expected", "group_id", "group_unjoined"]


def group_id(name: str) -> int | None:
    """The GID of group ``name`` (digits are a GID, taken as they are, as chown does); None if
    there is no such group."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def group_expected(name: str) -> str:
    """What a group setting naming the missing group ``name`` expected instead."""
    return f"the name or GID of an existing group (create it: groupadd {name})"


def group_unjoined(name: str) -> str:
    """What a ``[control] group`` the daemon's user is not in expected instead."""
    user = _user_name()
    return (
        f"a group {user}, who runs tsyncd, is in (it gives the control socket to that group:"
        f" usermod -aG {name} {user})"
    )


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
