/* zzz.js: the browser client of zzz. Raw WebSockets with reconnection, and Phoenix-compatible
 * channels (join, push with replies and timeouts, broadcasts, presence, recovery of the broadcasts
 * missed while away on topics with history) over one connection.
 *
 * No build step, no dependencies. Load it as a classic script (<script src="/__zzz/zzz.js">, then use
 * the global `Zzz`) or as an ES module (import { Zzz } from "/__zzz/zzz.mjs"; that wrapper loads this
 * file and re-exports the global). Under CommonJS it is module.exports.
 */
(function (root) {
  "use strict";

  var CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;

  function noop() {}

  function toWsUrl(url) {
    if (/^wss?:\/\//i.test(url)) return url;
    if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
    var loc = root.location;
    if (!loc) throw new Error("Zzz: a relative URL needs a page location: " + url);
    var scheme = loc.protocol === "https:" ? "wss://" : "ws://";
    if (url.charAt(0) === "/") return scheme + loc.host + url;
    var dir = loc.pathname.replace(/[^/]*$/, "");
    return scheme + loc.host + dir + url;
  }

  function withParams(url, params) {
    var keys = Object.keys(params || {});
    if (!keys.length) return url;
    var q = keys.map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
    }).join("&");
    return url + (url.indexOf("?") === -1 ? "?" : "&") + q;
  }

  function option(opts, name, fallback) {
    return opts && opts[name] !== undefined && opts[name] !== null ? opts[name] : fallback;
  }

  // Tiny event emitter shared by connections and channels.
  function Emitter() {
    this._listeners = {};
  }
  Emitter.prototype.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return this;
  };
  Emitter.prototype.off = function (event, fn) {
    if (fn === undefined) delete this._listeners[event];
    else if (this._listeners[event]) {
      this._listeners[event] = this._listeners[event].filter(function (f) { return f !== fn; });
    }
    return this;
  };
  Emitter.prototype._emit = function (event, a, b, c) {
    var list = this._listeners[event];
    if (!list) return;
    list.slice().forEach(function (fn) {
      try {
        fn(a, b, c);
      } catch (err) {
        // A listener's bug must not break the socket for every other listener.
        setTimeout(function () { throw err; }, 0);
      }
    });
  };

  // ------------------------------------------------------------------------------------------------
  // Zzz.connect: one WebSocket that comes back after it drops.

  /**
   * Open a WebSocket that reconnects with exponential backoff and jitter until close() is called.
   * @param {string} url ws://, wss://, http(s):// or a path on this page's host.
   * @param {{maxRetries?: number, baseDelay?: number, maxDelay?: number, protocols?: string[]}} opts
   *   delays in ms: retry n waits a random time between half and all of min(baseDelay * 2^n, maxDelay).
   * @returns {Connection} events "open", "message" (data), "close" ({code, reason, wasClean,
   *   willReconnect}), "error" (event).
   */
  function connect(url, opts) {
    return new Connection(url, opts);
  }

  function Connection(url, opts) {
    Emitter.call(this);
    this.url = toWsUrl(url);
    this.maxRetries = option(opts, "maxRetries", Infinity);
    this.baseDelay = option(opts, "baseDelay", 1000);
    this.maxDelay = option(opts, "maxDelay", 30000);
    this.protocols = option(opts, "protocols", undefined);
    this.retries = 0;
    this._ws = null;
    this._timer = null;
    this._stopped = false;
    this._open();
  }
  Connection.prototype = Object.create(Emitter.prototype);
  Connection.prototype.constructor = Connection;

  Object.defineProperty(Connection.prototype, "readyState", {
    get: function () { return this._ws ? this._ws.readyState : CLOSED; },
  });

  Connection.prototype._open = function () {
    var self = this;
    self._timer = null;
    var ws;
    try {
      ws = self.protocols ? new WebSocket(self.url, self.protocols) : new WebSocket(self.url);
    } catch (err) {
      self._emit("error", err);
      self._lost({ code: 1006, reason: String(err), wasClean: false });
      return;
    }
    ws.binaryType = "arraybuffer";
    self._ws = ws;
    ws.onopen = function () {
      self.retries = 0;
      self._emit("open");
    };
    ws.onmessage = function (ev) { self._emit("message", ev.data); };
    ws.onerror = function (ev) { self._emit("error", ev); };
    ws.onclose = function (ev) {
      if (self._ws === ws) self._lost({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    };
  };

  Connection.prototype._lost = function (info) {
    this._ws = null;
    var again = !this._stopped && this.retries < this.maxRetries;
    info.willReconnect = again;
    this._emit("close", info);
    if (again) {
      var ceiling = Math.min(this.baseDelay * Math.pow(2, this.retries), this.maxDelay);
      // "Equal jitter": never less than half the step, so clients that dropped together spread out
      // without any of them hammering the server right away.
      var delay = ceiling / 2 + Math.random() * ceiling / 2;
      this.retries += 1;
      var self = this;
      this._timer = setTimeout(function () { self._open(); }, delay);
    }
  };

  /** Send a string or binary data; returns false (and drops it) when the socket is not open. */
  Connection.prototype.send = function (data) {
    if (!this._ws || this._ws.readyState !== OPEN) return false;
    this._ws.send(data);
    return true;
  };

  /** Close for good: no reconnection after this. */
  Connection.prototype.close = function (code, reason) {
    this._stopped = true;
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    if (this._ws) this._ws.close(code || 1000, reason || "");
  };

  /** Drop the current socket now and reconnect (used when the peer stopped answering). */
  Connection.prototype.reconnect = function (reason) {
    var ws = this._ws;
    if (!ws) return;
    ws.onclose = ws.onmessage = ws.onerror = ws.onopen = noop;
    try { ws.close(1000, reason || ""); } catch (err) { /* closing a dead socket may throw */ }
    this._lost({ code: 1006, reason: reason || "", wasClean: false });
  };

  // ------------------------------------------------------------------------------------------------
  // Zzz.socket: Phoenix channels over one Connection.

  var REJOIN_STEPS = [1000, 2000, 5000];

  /**
   * Connect a channel socket at once.
   * @param {string} url the endpoint, e.g. "/socket" (served by Router.channel("/socket", ...)).
   * @param {{params?: object, heartbeatInterval?: number, pushTimeout?: number, maxRetries?: number,
   *   baseDelay?: number, maxDelay?: number}} opts params go in the query string.
   */
  function socket(url, opts) {
    return new Socket(url, opts);
  }

  function Socket(url, opts) {
    Emitter.call(this);
    this.heartbeatInterval = option(opts, "heartbeatInterval", 30000);
    this.pushTimeout = option(opts, "pushTimeout", 10000);
    this.channels = [];
    this._ref = 0;
    this._pending = {}; // ref -> {onReply(status, response), timer}
    this._queue = []; // frames written while disconnected, sent on open after the rejoins
    this._heartbeatRef = null;
    this._heartbeatTimer = null;
    var self = this;
    var conn = (this.conn = new Connection(withParams(url, option(opts, "params", null)), opts));
    conn.on("open", function () { self._onOpen(); });
    conn.on("close", function (info) { self._onClose(info); });
    conn.on("error", function (ev) { self._emit("error", ev); });
    conn.on("message", function (data) { self._onMessage(data); });
  }
  Socket.prototype = Object.create(Emitter.prototype);
  Socket.prototype.constructor = Socket;

  Object.defineProperty(Socket.prototype, "connected", {
    get: function () { return this.conn.readyState === OPEN; },
  });

  Socket.prototype.nextRef = function () {
    this._ref += 1;
    return String(this._ref);
  };

  /** A channel for topic; call join() on it. */
  Socket.prototype.channel = function (topic, params) {
    var ch = new Channel(this, topic, params || {});
    this.channels.push(ch);
    return ch;
  };

  /** Close the connection for good (channels stay as they are; no reconnection). */
  Socket.prototype.disconnect = function (code, reason) {
    this._stopHeartbeat();
    this.conn.close(code, reason);
  };

  Socket.prototype._write = function (frame) {
    var text = JSON.stringify(frame);
    if (!this.conn.send(text)) this._queue.push(text);
  };

  // Send a message that expects a phx_reply; onReply(status, response) gets "ok", "error" or "timeout".
  Socket.prototype._request = function (frame, onReply) {
    var self = this;
    var ref = frame.ref;
    var entry = {
      onReply: onReply,
      timer: setTimeout(function () {
        delete self._pending[ref];
        onReply("timeout", { reason: "timeout" });
      }, this.pushTimeout),
    };
    this._pending[ref] = entry;
    this._write(frame);
  };

  Socket.prototype._forget = function (ref) {
    var entry = this._pending[ref];
    if (entry) {
      clearTimeout(entry.timer);
      delete this._pending[ref];
    }
  };

  Socket.prototype._onOpen = function () {
    var self = this;
    this._heartbeatRef = null;
    this._startHeartbeat();
    this.channels.forEach(function (ch) { ch._onSocketOpen(); });
    var queued = this._queue;
    this._queue = [];
    queued.forEach(function (text) { self.conn.send(text); });
    this._emit("open");
  };

  Socket.prototype._onClose = function (info) {
    this._stopHeartbeat();
    this.channels.forEach(function (ch) { ch._onSocketClose(); });
    this._emit("close", info);
  };

  Socket.prototype._startHeartbeat = function () {
    var self = this;
    this._stopHeartbeat();
    if (!this.heartbeatInterval) return;
    this._heartbeatTimer = setInterval(function () {
      if (self._heartbeatRef !== null) {
        // The last heartbeat got no reply within a whole interval: the link is dead even if the
        // browser has not noticed. Reconnect now instead of waiting for TCP to give up.
        self._heartbeatRef = null;
        self.conn.reconnect("heartbeat timeout");
        return;
      }
      var ref = (self._heartbeatRef = self.nextRef());
      self.conn.send(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: ref }));
    }, this.heartbeatInterval);
  };

  Socket.prototype._stopHeartbeat = function () {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
    this._heartbeatRef = null;
  };

  Socket.prototype._onMessage = function (data) {
    var msg;
    try {
      var raw = JSON.parse(data);
      // zzz's extension: an optional meta, the 6th element of the array form ("meta" in objects).
      msg = Array.isArray(raw)
        ? { join_ref: raw[0], ref: raw[1], topic: raw[2], event: raw[3], payload: raw[4], meta: raw[5] }
        : raw;
    } catch (err) {
      return;
    }
    if (!msg || typeof msg.topic !== "string") return;
    this._emit("message", msg);
    if (msg.event === "phx_reply" && msg.ref != null) {
      if (msg.ref === this._heartbeatRef) {
        this._heartbeatRef = null;
        return;
      }
      var entry = this._pending[msg.ref];
      if (entry) {
        this._forget(msg.ref);
        var p = msg.payload || {};
        entry.onReply(p.status === "ok" ? "ok" : "error", p.response, msg.meta);
      }
      return;
    }
    this.channels.forEach(function (ch) {
      // join_ref tells replies and pushes of an old join (before a rejoin) from current ones;
      // broadcasts carry none and go to every channel on the topic.
      if (ch.topic === msg.topic && (msg.join_ref == null || msg.join_ref === ch.joinRef)) {
        ch._onEvent(msg.event, msg.payload, msg.meta);
      }
    });
  };

  // ------------------------------------------------------------------------------------------------
  // Channels

  function Channel(socket, topic, params) {
    Emitter.call(this);
    this.socket = socket;
    this.topic = topic;
    this.params = params;
    this.state = "closed"; // closed | joining | joined | errored | leaving
    this.joinRef = null;
    this._joinPromise = null;
    this._joinSettle = null;
    this._buffer = []; // pushes waiting for the join
    this._rejoinTimer = null;
    this._rejoinTries = 0;
    this._presence = null;
    // Topics with history: the last {offset, epoch} received, sent back as meta.recover on rejoin.
    this._position = null;
    this._recovery = null; // {recovered, missed, upTo, epoch} from a rejoin's reply until its replay ends
    this._recoverFns = [];
  }
  Channel.prototype = Object.create(Emitter.prototype);
  Channel.prototype.constructor = Channel;

  /** The last stream position received on a topic with history ({offset, epoch}), or null. */
  Object.defineProperty(Channel.prototype, "position", {
    get: function () {
      return this._position ? { offset: this._position.offset, epoch: this._position.epoch } : null;
    },
  });

  /**
   * Call fn({recovered, missed}) after each rejoin of a topic with history, once the broadcasts missed
   * while away have been replayed (they reach on(event, cb) first, like live ones). recovered false:
   * the server no longer had them (or the stream restarted): reload the state. Chainable.
   */
  Channel.prototype.onRecover = function (fn) {
    this._recoverFns.push(fn);
    return this;
  };

  Channel.prototype._recovered = function () {
    var rec = this._recovery;
    if (!rec) return;
    this._recovery = null;
    var info = { recovered: rec.recovered, missed: rec.missed };
    this._recoverFns.slice().forEach(function (fn) {
      try {
        fn(info);
      } catch (err) {
        setTimeout(function () { throw err; }, 0);
      }
    });
  };

  /** Join the topic; resolves with the join reply's response, rejects with the error one. */
  Channel.prototype.join = function () {
    if (this._joinPromise && this.state !== "closed") return this._joinPromise;
    var self = this;
    this._joinPromise = new Promise(function (resolve, reject) {
      var settle = (self._joinSettle = { resolve: resolve, reject: reject });
      // The promise answers within pushTimeout even while offline; the channel itself keeps trying.
      setTimeout(function () {
        if (self._joinSettle === settle) {
          self._joinSettle = null;
          reject({ reason: "timeout" });
        }
      }, self.socket.pushTimeout);
    });
    // Callers who only care about the channel's events may ignore the promise.
    this._joinPromise.catch(noop);
    this._sendJoin();
    return this._joinPromise;
  };

  Channel.prototype._sendJoin = function () {
    var self = this;
    var socket = this.socket;
    if (this._rejoinTimer) clearTimeout(this._rejoinTimer);
    this._rejoinTimer = null;
    if (this.joinRef) socket._forget(this.joinRef);
    this.state = "joining";
    if (!socket.connected) return; // _onSocketOpen sends it
    var ref = (this.joinRef = socket.nextRef());
    var frame = { topic: this.topic, event: "phx_join", payload: this.params, ref: ref, join_ref: ref };
    var asked = this._position;
    if (asked) frame.meta = { recover: { offset: asked.offset, epoch: asked.epoch } };
    this._recovery = null;
    socket._request(
      frame,
      function (status, response, meta) {
        if (ref !== self.joinRef || self.state !== "joining") return;
        var settle = self._joinSettle;
        self._joinSettle = null;
        if (status === "ok") {
          self.state = "joined";
          self._rejoinTries = 0;
          var replay = false;
          if (meta && typeof meta.offset === "number") {
            var current = { offset: meta.offset, epoch: meta.epoch };
            if (meta.recovered && asked && asked.epoch === current.epoch) {
              // The missed broadcasts follow this reply; each one moves _position forward.
              replay = current.offset > asked.offset;
            } else {
              self._position = current;
            }
            if (asked) {
              self._recovery = {
                recovered: !!meta.recovered, missed: 0, upTo: current.offset, epoch: current.epoch,
              };
            }
          }
          if (settle) settle.resolve(response);
          if (self._recovery && !replay) self._recovered();
          var buffered = self._buffer;
          self._buffer = [];
          buffered.forEach(function (send) { send(); });
        } else if (status === "error" && response && response.reason === "history unavailable") {
          // The server could not read the topic's history just now (its backend is down): try again.
          self.state = "errored";
          if (settle) settle.reject(response);
          self._scheduleRejoin();
        } else if (status === "error") {
          self.state = "closed";
          if (settle) settle.reject(response);
          self._emit("phx_error", response);
        } else {
          // No answer: try again later, as long as the channel is wanted.
          self.state = "errored";
          if (settle) settle.reject(response);
          self._scheduleRejoin();
        }
      }
    );
  };

  Channel.prototype._scheduleRejoin = function () {
    var self = this;
    var delay = REJOIN_STEPS[Math.min(this._rejoinTries, REJOIN_STEPS.length - 1)];
    this._rejoinTries += 1;
    this._rejoinTimer = setTimeout(function () {
      self._rejoinTimer = null;
      if (self.state === "errored" && self.socket.connected) self._sendJoin();
    }, delay);
  };

  Channel.prototype._onSocketOpen = function () {
    if (this.state === "joining" || this.state === "errored" || this.state === "joined") this._sendJoin();
  };

  Channel.prototype._onSocketClose = function () {
    if (this.state === "joined" || this.state === "joining") this.state = "errored";
  };

  Channel.prototype._onEvent = function (event, payload, meta) {
    if (meta && typeof meta.offset === "number") {
      var pos = this._position;
      // Once each: an offset already seen in this epoch is not delivered again.
      if (pos && pos.epoch === meta.epoch && meta.offset <= pos.offset) return;
      this._position = { offset: meta.offset, epoch: meta.epoch };
      var rec = this._recovery;
      if (rec) {
        if (meta.epoch === rec.epoch && meta.offset <= rec.upTo) rec.missed += 1;
        this._emit(event, payload);
        // The replay ends with the reply's offset (or, if an intercept held that one back, with the
        // presence_state that follows every replay).
        if (meta.epoch !== rec.epoch || meta.offset >= rec.upTo) this._recovered();
        return;
      }
    }
    if (event === "phx_close") {
      this.state = "closed";
    } else if (event === "phx_error") {
      if (this.state === "joined") {
        this.state = "errored";
        this._scheduleRejoin();
      }
    }
    this._emit(event, payload);
    if (event === "presence_state" && this._recovery) this._recovered();
  };

  /**
   * Push an event; resolves with the ok reply's response, rejects with the error reply's response or,
   * after pushTimeout ms, with {reason: "timeout"}. Pushes made before the join completes wait for it.
   */
  Channel.prototype.push = function (event, payload) {
    var self = this;
    var socket = this.socket;
    return new Promise(function (resolve, reject) {
      var done = false;
      var ref = null;
      var timer = setTimeout(function () {
        done = true;
        if (ref) socket._forget(ref);
        reject({ reason: "timeout" });
      }, socket.pushTimeout);
      var send = function () {
        if (done) return;
        clearTimeout(timer);
        ref = socket.nextRef();
        socket._request(
          { topic: self.topic, event: event, payload: payload || {}, ref: ref, join_ref: self.joinRef },
          function (status, response) {
            done = true;
            if (status === "ok") resolve(response);
            else reject(response);
          }
        );
      };
      if (self.state === "joined" && socket.connected) send();
      else if (self.state === "closed" || self.state === "leaving") {
        clearTimeout(timer);
        reject({ reason: "not joined" });
      } else self._buffer.push(send);
    });
  };

  /** Leave the topic; resolves with the reply's response (at once when disconnected). */
  Channel.prototype.leave = function () {
    var self = this;
    var socket = this.socket;
    if (this._rejoinTimer) clearTimeout(this._rejoinTimer);
    this._rejoinTimer = null;
    var wasJoined = this.state === "joined" && socket.connected;
    var joinRef = this.joinRef;
    if (joinRef) socket._forget(joinRef);
    this.state = "leaving";
    this._buffer = [];
    var finish = function () {
      self.state = "closed";
      socket.channels = socket.channels.filter(function (c) { return c !== self; });
      self._emit("phx_close", {});
    };
    if (!wasJoined) {
      finish();
      return Promise.resolve({});
    }
    return new Promise(function (resolve, reject) {
      socket._request(
        { topic: self.topic, event: "phx_leave", payload: {}, ref: socket.nextRef(), join_ref: joinRef },
        function (status, response) {
          finish();
          if (status === "ok") resolve(response);
          else reject(response);
        }
      );
    });
  };

  /** The Presence of this channel (made on first use). */
  Channel.prototype.presence = function () {
    if (!this._presence) this._presence = new Presence(this);
    return this._presence;
  };

  // ------------------------------------------------------------------------------------------------
  // Presence: applies presence_state / presence_diff to a synced {key: {metas: [...]}} map.

  function clone(obj) {
    return JSON.parse(JSON.stringify(obj));
  }

  function refsOf(presence) {
    return presence.metas.map(function (m) { return m.phx_ref; });
  }

  /**
   * Keep a synced presence list for a channel.
   * @param {Channel} channel
   * Callbacks: onSync(), onJoin(key, current|undefined, joined), onLeave(key, remaining, left).
   */
  function Presence(channel) {
    var self = this;
    this.state = {};
    this._pending = []; // diffs that arrived before the state of the current join
    this._synced = false;
    this._joinRef = null;
    this._onJoin = noop;
    this._onLeave = noop;
    this._onSync = noop;
    channel.on("presence_state", function (state) {
      self._joinRef = channel.joinRef;
      self.state = Presence.syncState(self.state, state, self._onJoin, self._onLeave);
      self._pending.forEach(function (diff) {
        self.state = Presence.syncDiff(self.state, diff, self._onJoin, self._onLeave);
      });
      self._pending = [];
      self._synced = true;
      self._onSync();
    });
    channel.on("presence_diff", function (diff) {
      if (!self._synced || self._joinRef !== channel.joinRef) {
        self._pending.push(diff);
        return;
      }
      self.state = Presence.syncDiff(self.state, diff, self._onJoin, self._onLeave);
      self._onSync();
    });
  }

  Presence.prototype.onJoin = function (cb) { this._onJoin = cb; return this; };
  Presence.prototype.onLeave = function (cb) { this._onLeave = cb; return this; };
  Presence.prototype.onSync = function (cb) { this._onSync = cb; return this; };

  /** The presences as an array: by(key, {metas}) for each, or {key, metas} when by is omitted. */
  Presence.prototype.list = function (by) {
    return Presence.list(this.state, by);
  };

  Presence.list = function (state, by) {
    by = by || function (key, p) { return { key: key, metas: p.metas }; };
    return Object.keys(state).map(function (key) { return by(key, state[key]); });
  };

  /** Replace state with newState, reporting joins and leaves (per phx_ref) to the callbacks. */
  Presence.syncState = function (state, newState, onJoin, onLeave) {
    state = clone(state);
    newState = clone(newState);
    var joins = {}, leaves = {};
    Object.keys(state).forEach(function (key) {
      if (!newState[key]) leaves[key] = state[key];
    });
    Object.keys(newState).forEach(function (key) {
      var next = newState[key], current = state[key];
      if (!current) {
        joins[key] = next;
        return;
      }
      var nextRefs = refsOf(next), curRefs = refsOf(current);
      var joined = next.metas.filter(function (m) { return curRefs.indexOf(m.phx_ref) < 0; });
      var left = current.metas.filter(function (m) { return nextRefs.indexOf(m.phx_ref) < 0; });
      if (joined.length) joins[key] = { metas: joined };
      if (left.length) leaves[key] = { metas: left };
    });
    return Presence.syncDiff(state, { joins: joins, leaves: leaves }, onJoin, onLeave);
  };

  /** Apply a {joins, leaves} diff to state (returned, the input is not changed). */
  Presence.syncDiff = function (state, diff, onJoin, onLeave) {
    state = clone(state);
    onJoin = onJoin || noop;
    onLeave = onLeave || noop;
    var joins = diff.joins || {}, leaves = diff.leaves || {};
    Object.keys(joins).forEach(function (key) {
      var current = state[key];
      var joined = clone(joins[key]);
      var next = { metas: joined.metas.slice() };
      if (current) {
        var joinedRefs = refsOf(joined);
        var kept = current.metas.filter(function (m) { return joinedRefs.indexOf(m.phx_ref) < 0; });
        next.metas = kept.concat(next.metas);
      }
      state[key] = next;
      onJoin(key, current, joined);
    });
    Object.keys(leaves).forEach(function (key) {
      var current = state[key];
      if (!current) return;
      var gone = refsOf(leaves[key]);
      current.metas = current.metas.filter(function (m) { return gone.indexOf(m.phx_ref) < 0; });
      onLeave(key, current, leaves[key]);
      if (current.metas.length === 0) delete state[key];
    });
    return state;
  };

  // ------------------------------------------------------------------------------------------------
  // Zzz.fetch: fetch() with JSON bodies and the page's CSRF token.

  /**
   * fetch(url, opts) that JSON-encodes opts.json and sends the token of <meta name="csrf-token"> as
   * X-CSRF-Token on requests other than GET/HEAD.
   */
  function zfetch(url, opts) {
    opts = Object.assign({}, opts || {});
    var headers = Object.assign({}, opts.headers || {});
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    var method = (opts.method || "GET").toUpperCase();
    var doc = root.document;
    var meta = doc && doc.querySelector && doc.querySelector('meta[name="csrf-token"]');
    if (meta && method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = meta.getAttribute("content");
    opts.headers = headers;
    return root.fetch(url, opts);
  }

  var Zzz = {
    version: "0.1.0",
    connect: connect,
    socket: socket,
    Presence: Presence,
    fetch: zfetch,
    Connection: Connection,
    Socket: Socket,
    Channel: Channel,
    CONNECTING: CONNECTING,
    OPEN: OPEN,
    CLOSING: CLOSING,
    CLOSED: CLOSED,
  };

  root.Zzz = Zzz;
  if (typeof module === "object" && module && module.exports) module.exports = Zzz;
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this);
