"""One edit of a subject's files at a time, and one app per workspace.

Two request handlers rewriting a subject's manifest at once would lose one of the changes;
renaming a subject while its photos are being cropped would lose the crops. Two apps on
one workspace could delete a subject the other is training.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from ..core.files import safe_name
from ..errors import InputError


class SubjectLocks:
    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, subject: str) -> threading.Lock:
        # casefold: on Windows and macOS 'Dog' and 'dog' are the same folder.
        key = safe_name(subject).casefold()
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


# The app holding a workspace: one at a time, since two would delete and train each other's
# subjects. Kept in the workspace, so it holds for every process that opens that folder.
WORKSPACE_LOCK = ".dreamstudio-app.lock"


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def take_workspace_lock(root: Path, port: int) -> Path:
    """Claim the workspace for this process (pid and port in the lock file); refuse if
    another live process holds it. A lock left by a process that is gone is taken over."""
    path = Path(root) / WORKSPACE_LOCK
    mine = {"pid": os.getpid(), "port": port, "host": socket.gethostname()}
    text = json.dumps(mine)
    for _ in range(3):  # another process may take or drop it in between
        # Written beside it, then linked in: the lock never exists half written.
        temp = path.with_name(f"{path.name}.{os.getpid()}")
        temp.write_text(text, encoding="utf-8")
        try:
            os.link(temp, path)
            return path
        except FileExistsError:
            pass
        finally:
            temp.unlink(missing_ok=True)
        try:
            seen = path.read_text(encoding="utf-8")
            holder = json.loads(seen)
            pid = int(holder["pid"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            seen, holder, pid = None, {}, None  # damaged: nobody can be holding it
        same_host = holder.get("host", mine["host"]) == mine["host"]
        if pid is not None and pid != os.getpid() and (not same_host or _alive(pid)):
            where = "" if same_host else f" on {holder.get('host')}"
            raise InputError(
                f"Workspace {Path(root)} is open in another DreamStudio (PID {pid}{where}, "
                f"port {holder.get('port')}): use that one (http://127.0.0.1:"
                f"{holder.get('port')}/), stop it, or pass another --workspace. If no such "
                f"app runs, delete {path}."
            )
        # Stale, or ours from an earlier launch; dropped only if no one replaced it since.
        try:
            if seen is None or path.read_text(encoding="utf-8") == seen:
                path.unlink()
        except FileNotFoundError:
            pass
    raise InputError(f"Could not take the workspace lock {path}: try again.")


def release_workspace_lock(root: Path) -> None:
    """Drop the lock if this process holds it."""
    path = Path(root) / WORKSPACE_LOCK
    try:
        if int(json.loads(path.read_text(encoding="utf-8"))["pid"]) == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass
