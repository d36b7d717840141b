"""Wire compatibility with the real phoenix.js (array form, ``/websocket`` suffix, heartbeats, presence).

phoenix.js comes from the npm registry (``npm pack phoenix@1.7.23``), cached under ~/.cache/zzz-tests;
the test fails, not skips, when npm cannot fetch it.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

PHOENIX_VERSION = "1.7.23"
CACHE = Path.home() / ".cache" / "zzz-tests" / f"phoenix-{PHOENIX_VERSION}"


@pytest.fixture(scope="session")
def phoenix_js() -> Path:
    script = CACHE / "package" / "priv" / "static" / "phoenix.js"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to fetch phoenix.js for the compatibility test (apt-get install -y npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "pack", f"phoenix@{PHOENIX_VERSION}", "--silent"],
        check=False,
        cwd=CACHE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    tgz = CACHE / f"phoenix-{PHOENIX_VERSION}.tgz"
    if done.returncode != 0 or not tgz.exists():
        pytest.fail(f"npm pack phoenix@{PHOENIX_VERSION} failed: {done.stderr.strip()}")
    with tarfile.open(tgz) as tar:
        tar.extractall(CACHE, filter="data")
    return script


def test_phoenix_js_joins_pushes_and_tracks_presence(page: Any, phoenix_js: Path) -> None:
    page.add_script_tag(path=str(phoenix_js))
    result = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const out = {};
            const s = new Phoenix.Socket("/socket", {heartbeatIntervalMs: 200});
            s.connect();
            const ch = s.channel("room:phx", {user: "pat"});
            const presence = new Phoenix.Presence(ch);
            presence.onSync(() => { out.presence = presence.list((id) => id); });
            ch.on("new_msg", (m) => { out.msg = m; });
            ch.join()
              .receive("ok", (resp) => {
                out.join = resp;
                ch.push("new_msg", {body: "via phoenix.js"}).receive("ok", (r) => { out.reply = r; });
                ch.push("fail", {}).receive("error", (e) => { out.fail = e; });
                // Several heartbeat rounds: a missed reply would make phoenix.js drop the connection.
                setTimeout(() => {
                  out.connected = s.isConnected();
                  out.transport = s.conn.url;
                  resolve(out);
                }, 1000);
              })
              .receive("error", (e) => reject(new Error(JSON.stringify(e))));
        })"""
    )
    assert result["join"] == {"joined": "room:phx"}
    assert result["presence"] == ["pat"]
    assert result["msg"] == {"user": "pat", "body": "via phoenix.js"}
    assert result["reply"] == {"accepted": True}
    assert result["fail"] == {"reason": "nope"}
    assert result["connected"] is True
    assert "/socket/websocket?" in result["transport"] and "vsn=2.0.0" in result["transport"]
