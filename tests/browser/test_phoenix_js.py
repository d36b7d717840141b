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


def test_phoenix_js_on_a_topic_with_history(page: Any, phoenix_js: Path) -> None:
    """Frames on history topics carry a 6th element (meta); phoenix.js, unmodified, ignores it."""
    page.add_script_tag(path=str(phoenix_js))
    result = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const out = {msgs: [], raw: []};
            // phoenix.js's own WebSocket, spied on: the raw frames it parses
            class Spy extends WebSocket {
              constructor(url, protocols) {
                super(url, protocols);
                this.addEventListener("message", (e) => out.raw.push(JSON.parse(e.data)));
              }
            }
            const s = new Phoenix.Socket("/socket", {heartbeatIntervalMs: 200, transport: Spy});
            s.connect();
            const ch = s.channel("hist:phx", {user: "pat"});
            ch.on("new_msg", (m) => { out.msgs.push(m); });
            ch.join()
              .receive("ok", (resp) => {
                out.join = resp;
                ch.push("new_msg", {body: "one"}).receive("ok", (r) => {
                  out.reply = r;
                  ch.push("new_msg", {body: "two"});
                });
                setTimeout(() => {
                  out.connected = s.isConnected();
                  out.state = ch.state;
                  resolve(out);
                }, 1000);
              })
              .receive("error", (e) => reject(new Error(JSON.stringify(e))));
        })"""
    )
    assert result["join"] == {"joined": "hist:phx"}
    assert result["reply"] == {"accepted": True}
    assert result["msgs"] == [{"user": "pat", "body": "one"}, {"user": "pat", "body": "two"}]
    assert result["connected"] is True and result["state"] == "joined"
    broadcasts = [f for f in result["raw"] if f[3] == "new_msg"]
    assert [len(f) for f in broadcasts] == [6, 6]
    assert [f[5]["offset"] for f in broadcasts] == [1, 2]
    join_reply = next(f for f in result["raw"] if f[3] == "phx_reply" and f[1] == f[0])
    assert join_reply[5] == {"recovered": False, "offset": 0, "epoch": broadcasts[0][5]["epoch"]}
