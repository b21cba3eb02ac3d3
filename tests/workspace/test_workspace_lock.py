"""One app per workspace, across processes: a second is refused, naming the first."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import REPO

HOLD = ("import sys; from dreamstudio.studio import Studio; "
        "Studio(sys.argv[1], model='some/model').claim_workspace(7999); "
        "print('holding', flush=True); sys.stdin.read()")


def _second_app(workspace, model):
    return subprocess.run([sys.executable, "app.py", "--workspace", str(workspace),
                           "--port", "8001", "--model", str(model)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_a_second_app_on_one_workspace_is_refused_until_the_first_is_gone(tmp_path,
                                                                         tiny_model):
    workspace = tmp_path / "ws"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(workspace)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "holding"
        second = _second_app(workspace, tiny_model)
        assert second.returncode == 2, second.stderr
        [line] = second.stderr.strip().splitlines()
        assert line.startswith("app.py: error: Workspace")
        assert f"PID {first.pid}" in line and "port 7999" in line
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # no clean exit: its lock is left behind, stale
        first.wait(30)

    from dreamstudio.studio import Studio
    from dreamstudio.workspace.locks import WORKSPACE_LOCK, release_workspace_lock

    studio = Studio(workspace, model="some/model")
    studio.claim_workspace(8002)  # the dead holder's lock is taken over
    assert '"port": 8002' in (workspace / WORKSPACE_LOCK).read_text()
    studio.claim_workspace(8003)  # a restart in the same process keeps it
    release_workspace_lock(workspace)
    assert not (workspace / WORKSPACE_LOCK).exists()
