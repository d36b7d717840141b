"""zzz.js in headless Chromium against a real zzz app: raw connections, channels, presence, reconnects.

Each test runs JavaScript in the page with Playwright and checks what the client saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.channels.conftest import RedisServer
from tests.channels.procs import AppProcess


def test_script_loads_without_errors(page: Any) -> None:
    assert page.evaluate("typeof Zzz.socket") == "function"
    assert page.evaluate("typeof Zzz.connect") == "function"
    assert page.js_errors == []


def test_es_module_wrapper_exports_the_same_object(new_page: Any) -> None:
    p = new_page("/module")
    p.wait_for_function("window.moduleResult !== undefined")
    assert p.evaluate("window.moduleResult") == {"named": "function", "same": True}


def test_raw_connect_send_receive_close(page: Any) -> None:
    result = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            const c = Zzz.connect("/echo", {baseDelay: 50});
            c.on("open", () => { seen.push("open:" + c.readyState); c.send("ping-1"); });
            c.on("message", (data) => { seen.push("msg:" + data); c.close(); });
            c.on("close", (info) => {
                seen.push("close:" + info.code + ":" + info.willReconnect);
                setTimeout(() => resolve({seen, state: c.readyState, sent: c.send("late")}), 300);
            });
        })"""
    )
    assert result == {"seen": ["open:1", "msg:ping-1", "close:1000:false"], "state": 3, "sent": False}


def test_join_push_reply_errors_and_timeout(page: Any) -> None:
    result = page.evaluate(
        """async () => {
            const s = Zzz.socket("/socket", {pushTimeout: 700});
            const ch = s.channel("room:b1", {user: "ann"});
            const out = {};
            out.join = await ch.join();
            out.reply = await ch.push("new_msg", {body: "hi"});
            out.fail = await ch.push("fail", {}).catch((e) => e);
            out.timeout = await ch.push("silent", {}).catch((e) => e);
            out.rejected = await s.channel("room:b1x", {password: "wrong"}).join().catch((e) => e);
            out.nochannel = await s.channel("elsewhere").join().catch((e) => e);
            out.left = await ch.leave();
            out.afterLeave = await ch.push("new_msg", {body: "x"}).catch((e) => e);
            s.disconnect();
            return out;
        }"""
    )
    assert result == {
        "join": {"joined": "room:b1"},
        "reply": {"accepted": True},
        "fail": {"reason": "nope"},
        "timeout": {"reason": "timeout"},
        "rejected": {"reason": "join rejected"},
        "nochannel": {"reason": "no such channel"},
        "left": {},
        "afterLeave": {"reason": "not joined"},
    }


def test_pushes_before_join_completes_wait_for_it(page: Any) -> None:
    result = page.evaluate(
        """async () => {
            const s = Zzz.socket("/socket");
            const ch = s.channel("room:early", {user: "eve"});
            ch.join();
            const r = await ch.push("new_msg", {body: "early"});  // sent as soon as the join is ok
            s.disconnect();
            return r;
        }"""
    )
    assert result == {"accepted": True}


SUBSCRIBE = """([topic, user]) => {
    window.got = [];
    window.sock = Zzz.socket("/socket", {baseDelay: 100, maxDelay: 400, heartbeatInterval: 1000});
    window.chan = window.sock.channel(topic, {user});
    window.chan.on("new_msg", (p) => window.got.push(p));
    window.presence = window.chan.presence();
    window.joins = []; window.leaves = [];
    window.presence.onJoin((key, cur, joined) => window.joins.push(key));
    window.presence.onLeave((key, rest, left) => window.leaves.push(key));
    window.joinCount = 0;
    return window.chan.join().then(() => { window.joinCount += 1; return true; });
}"""


def test_broadcast_between_two_pages(new_page: Any) -> None:
    p1, p2 = new_page(), new_page()
    assert p1.evaluate(SUBSCRIBE, ["room:bc", "ann"]) is True
    assert p2.evaluate(SUBSCRIBE, ["room:bc", "bob"]) is True
    assert p2.evaluate("window.chan.push('new_msg', {body: 'hello ann'})") == {"accepted": True}
    p1.wait_for_function("window.got.length === 1")
    p2.wait_for_function("window.got.length === 1")
    assert p1.evaluate("window.got") == [{"user": "bob", "body": "hello ann"}]
    assert p2.evaluate("window.got") == [{"user": "bob", "body": "hello ann"}]


def test_presence_lists_sync_and_leaves(new_page: Any) -> None:
    p1, p2 = new_page(), new_page()
    p1.evaluate(SUBSCRIBE, ["room:pr", "ann"])
    p2.evaluate(SUBSCRIBE, ["room:pr", "bob"])
    keys = "window.presence.list((k) => k).sort().join(',')"
    p1.wait_for_function(f"{keys} === 'ann,bob'")
    p2.wait_for_function(f"{keys} === 'ann,bob'")
    assert p1.evaluate("window.joins") == ["ann", "bob"]
    metas = p1.evaluate("window.presence.list()")
    assert all(len(m["metas"]) == 1 and "phx_ref" in m["metas"][0] for m in metas)
    p2.evaluate("window.sock.disconnect()")
    p1.wait_for_function(f"{keys} === 'ann'")
    assert p1.evaluate("window.leaves") == ["bob"]


def test_reconnects_and_rejoins_after_server_restart(browser: Any) -> None:
    # Its own app process: restarting the module's shared one would disturb the other tests.
    app = AppProcess().start()
    context = browser.new_context()
    try:
        p1, p2 = context.new_page(), context.new_page()
        for p in (p1, p2):
            p.set_default_timeout(20000)
            p.goto(app.http + "/")
        p1.evaluate(SUBSCRIBE, ["room:re", "ann"])
        p1.evaluate("window.sock.on('open', () => { window.opens = (window.opens || 0) + 1; })")
        app.stop()
        p1.wait_for_function("!window.sock.connected")
        # A push while the server is down waits in the channel's buffer and goes out after the rejoin.
        p1.evaluate(
            "() => { window.chan.push('new_msg', {body: 'queued'})"
            ".then((r) => { window.queued = r; }, (e) => { window.queued = e; }); }"
        )
        app.start()
        p1.wait_for_function("window.opens >= 1 && window.chan.state === 'joined'")
        p1.wait_for_function("window.queued !== undefined")
        assert p1.evaluate("window.queued") == {"accepted": True}
        p1.wait_for_function("window.got.some((m) => m.body === 'queued')")
        p2.evaluate(SUBSCRIBE, ["room:re", "bob"])
        p2.evaluate("window.chan.push('new_msg', {body: 'after restart'})")
        p1.wait_for_function("window.got.some((m) => m.body === 'after restart')")
        # the presence list was rebuilt from the new server's state
        p1.wait_for_function("window.presence.list((k) => k).sort().join(',') === 'ann,bob'")
    finally:
        context.close()
        app.stop()


def test_missed_heartbeat_forces_a_reconnect(page: Any) -> None:
    # /mute accepts the WebSocket but never answers, so no heartbeat reply ever comes back.
    page.evaluate(
        """() => {
            window.opens = 0; window.closes = [];
            const s = Zzz.socket("/mute", {heartbeatInterval: 200, baseDelay: 50, maxDelay: 100});
            s.on("open", () => { window.opens += 1; });
            s.on("close", (info) => window.closes.push(info.reason));
            window.muted = s;
        }"""
    )
    page.wait_for_function("window.opens >= 2")
    assert "heartbeat timeout" in page.evaluate("window.closes")
    page.evaluate("window.muted.disconnect()")


@pytest.mark.parametrize("code", [1012, 1001])
def test_reconnects_after_a_service_restart_or_a_shutdown_close(page: Any, code: int) -> None:
    # What a draining server sends: 1012 on a restart, 1001 on a shutdown; both come back.
    page.evaluate(
        """(code) => {
            window.opens = 0; window.closes = [];
            const c = Zzz.connect("/closes/" + code, {baseDelay: 50, maxDelay: 100});
            c.on("open", () => { window.opens += 1; });
            c.on("close", (info) => window.closes.push([info.code, info.willReconnect]));
            window.closing = c;
        }""",
        code,
    )
    page.wait_for_function("window.opens >= 3")
    page.evaluate("window.closing.close()")
    closes = page.evaluate("window.closes")
    assert len(closes) >= 2 and all(c == [code, True] for c in closes[:2]), closes


RECOVERING = """([topic, user]) => {
    window.got = [];
    window.recoveries = [];
    window.sock = Zzz.socket("/socket", {baseDelay: 100, maxDelay: 400, heartbeatInterval: 1000});
    window.chan = window.sock.channel(topic, {user});
    window.chan.on("new_msg", (p) => window.got.push(p.body));
    window.chan.onRecover((info) => window.recoveries.push(info));
    return window.chan.join().then(() => true);
}"""

PUBLISH = """async ([topic, from, to]) => {
    if (!window.pub) {
        const opts = {baseDelay: 100, maxDelay: 400};
        window.pub = Zzz.socket("/socket", opts).channel(topic, {user: "pub"});
        await window.pub.join();
    }
    for (let i = from; i < to; i++) await window.pub.push("new_msg", {body: "m" + i});
    return true;
}"""


def test_zzz_js_recovers_what_it_missed_after_its_connection_is_cut(new_page: Any) -> None:
    p1, p2 = new_page(), new_page()
    assert p1.evaluate(RECOVERING, ["hist:cut", "ann"]) is True
    p2.evaluate(PUBLISH, ["hist:cut", 0, 3])
    p1.wait_for_function("window.got.length === 3")
    assert p1.evaluate("window.chan.position.offset") == 3
    # Cut the connection and keep it down (its reconnects go to a port where nobody listens).
    p1.evaluate(
        """() => { window.realUrl = window.sock.conn.url;
                   window.sock.conn.url = "ws://127.0.0.1:9/socket";
                   window.sock.conn.reconnect("cut"); }"""
    )
    p1.wait_for_function("!window.sock.connected")
    p2.evaluate(PUBLISH, ["hist:cut", 3, 53])  # 50 broadcasts while it is away
    p1.evaluate("() => { window.sock.conn.url = window.realUrl; }")
    p1.wait_for_function("window.recoveries.length === 1", timeout=20000)
    assert p1.evaluate("window.recoveries") == [{"recovered": True, "missed": 50}]
    assert p1.evaluate("window.got") == [f"m{i}" for i in range(53)]
    p2.evaluate(PUBLISH, ["hist:cut", 53, 54])  # then live, once
    p1.wait_for_function("window.got.length === 54")
    p1.wait_for_timeout(300)
    assert p1.evaluate("window.got") == [f"m{i}" for i in range(54)]
    assert p1.evaluate("window.chan.position.offset") == 54


def test_zzz_js_sends_no_recover_and_gets_no_meta_without_history(new_page: Any) -> None:
    p1 = new_page()
    p1.evaluate(
        """() => { window.frames = [];
                   const real = WebSocket.prototype.send;
                   WebSocket.prototype.send = function (d) { window.frames.push(d); return real.call(this, d); };
                 }"""
    )
    assert p1.evaluate(RECOVERING, ["room:nometa", "ann"]) is True
    p1.evaluate(PUBLISH, ["room:nometa", 0, 2])
    p1.wait_for_function("window.got.length === 2")
    assert p1.evaluate("window.chan.position") is None
    p1.evaluate("window.sock.conn.reconnect('cut')")
    p1.wait_for_function("window.sock.connected && window.chan.state === 'joined'")
    joins = p1.evaluate(
        "window.frames.map((f) => JSON.parse(f))"
        ".filter((f) => f.event === 'phx_join' && f.payload.user === 'ann')"
    )
    assert len(joins) == 2 and all("meta" not in j for j in joins)
    assert p1.evaluate("window.recoveries") == []


# The history lives in Redis, so a process started after the first one died continues its stream:
# the client recovers what was broadcast while it was cut off.
def test_zzz_js_recovers_across_a_server_restart_on_the_same_redis(
    browser: Any, redis_server: RedisServer
) -> None:
    app = AppProcess(redis_url=redis_server.url).start()
    context = browser.new_context()
    try:
        p1, p2 = context.new_page(), context.new_page()
        for p in (p1, p2):
            p.set_default_timeout(20000)
            p.goto(app.http + "/")
        assert p1.evaluate(RECOVERING, ["hist:restart", "ann"]) is True
        p2.evaluate(PUBLISH, ["hist:restart", 0, 3])
        p1.wait_for_function("window.got.length === 3")
        app.stop()
        p1.wait_for_function("!window.sock.connected")
        # Keep the subscriber away while the restarted server takes 50 broadcasts.
        p1.evaluate(
            """() => { window.realUrl = window.sock.conn.url;
                       window.sock.conn.url = "ws://127.0.0.1:9/socket"; }"""
        )
        app.start()
        p2.wait_for_function("window.pub.state === 'joined' && window.pub.socket.connected")
        p2.evaluate(PUBLISH, ["hist:restart", 3, 53])
        p1.evaluate("() => { window.sock.conn.url = window.realUrl; }")
        p1.wait_for_function("window.recoveries.length === 1")
        assert p1.evaluate("window.recoveries") == [{"recovered": True, "missed": 50}]
        assert p1.evaluate("window.got") == [f"m{i}" for i in range(53)]
    finally:
        context.close()
        app.stop()
