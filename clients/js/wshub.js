/* wshub.js -- a browser client for wshub's wshub.v1 subprotocol (docs/protocol.md).
 *
 * It keeps one WebSocket open to wshub. Each broadcast is delivered once and in order, as a
 * 'message' event with its sequence number. After a drop it reconnects with ?since=<last>&epoch=
 * and gets everything it missed. When the server says that cannot be done (welcome status
 * expired or reset, or a `g` gap line), it raises a 'gap' event so the application can refetch its
 * state. The client never skips messages without a 'gap' event.
 *
 * Loading: one file that works both ways. A classic script cannot contain `export`, so this file
 * has none. It defines WsHub inside a function and puts it on globalThis (and on module.exports
 * under CommonJS). That covers `<script src="wshub.js">` and `import "./wshub.js"`. wshub.mjs next
 * to it re-exports the same class for `import { WsHub } from "./wshub.mjs"`.
 *
 * Reconnecting (close codes from docs/protocol.md):
 *   1012 rolling restart        -> again after a short random delay (0..restartDelay)
 *   1008 policy                 -> stop; state 'closed' with the code; the app decides (connect())
 *   anything else, 1006 (drop), 1001, 1013, a failed or timed-out handshake
 *                               -> exponential backoff with full jitter:
 *                                  random(0, min(cap, base * 2^attempt))
 * The attempt count drops back to 0 only after a connection has stayed open for stableAfter ms.
 * Otherwise a server that welcomes a client and then drops it at once would be hit at the
 * base rate forever.
 *
 * Position: (epoch, last) is what resume needs. It is kept in memory, and in a Storage
 * (sessionStorage) when the `storage` option is given, updated after every message. Sequence
 * numbers are compared as decimal strings, never as JS numbers, so they stay exact up to the
 * protocol's 20 digits. The events also carry seq as a Number for convenience, exact up to 2^53.
 */
(function (root) {
    "use strict";

    var SUBPROTOCOL = "wshub.v1";
    var EPOCH_RE = /^[0-9a-f]{16}$/;
    var SEQ_RE = /^[0-9]{1,20}$/;

    var DEFAULTS = {
        backoff: { base: 500, cap: 30000 }, // ms; full jitter below min(cap, base * 2^attempt)
        restartDelay: 1000,                  // ms; 1012 reconnects after random(0, restartDelay)
        stableAfter: 5000,                   // ms open before the attempt count resets
        connectTimeout: 10000,               // ms from new WebSocket() to the welcome
        stopCodes: [1008],                   // close codes after which we do not retry
        storage: null,                       // e.g. sessionStorage: the position survives reloads
        storageKey: null,                    // default "wshub:" + the url (when a string)
        position: null,                      // {epoch, last} to start from (e.g. a snapshot)
        autoConnect: true,
        reconnectOnOnline: true,             // skip the backoff wait when the browser goes online
        WebSocket: null,                     // default globalThis.WebSocket
        random: Math.random
    };

    /* ---- decimal sequence numbers as strings ---- */

    function decNormalize(s) {
        var i = 0;
        while (i < s.length - 1 && s.charAt(i) === "0")
            i++;
        return s.slice(i);
    }

    /* <0, 0, >0 as a < b, a == b, a > b, for decimal strings. */
    function decCompare(a, b) {
        a = decNormalize(a);
        b = decNormalize(b);
        if (a.length !== b.length)
            return a.length - b.length;
        return a < b ? -1 : a > b ? 1 : 0;
    }

    function decIncrement(s) {
        var digits = decNormalize(s).split("");
        var i = digits.length - 1;
        while (i >= 0 && digits[i] === "9")
            digits[i--] = "0";
        if (i < 0)
            digits.unshift("1");
        else
            digits[i] = String.fromCharCode(digits[i].charCodeAt(0) + 1);
        return digits.join("");
    }

    /* ---- events ---- */

    function makeEvent(type, fields) {
        var ev = new Event(type);
        for (var k in fields)
            if (Object.prototype.hasOwnProperty.call(fields, k))
                Object.defineProperty(ev, k, { value: fields[k], enumerable: true });
        return ev;
    }

    /* ---- parsing: "<header line>\n<body>" in a text or binary message ---- */

    function splitText(data) {
        var nl = data.indexOf("\n");
        return nl < 0 ? { header: data, body: "" }
                      : { header: data.slice(0, nl), body: data.slice(nl + 1) };
    }

    function splitBinary(buf) {
        var bytes = new Uint8Array(buf);
        var nl = bytes.indexOf(10);
        var end = nl < 0 ? bytes.length : nl;
        var header = "";
        for (var i = 0; i < end; i++) // the header is ASCII: no decoder needed
            header += String.fromCharCode(bytes[i]);
        return { header: header, body: nl < 0 ? new ArrayBuffer(0) : buf.slice(nl + 1) };
    }

    function ProtocolError(message) {
        this.message = message;
    }

    function needSeq(s, what) {
        if (typeof s !== "string" || !SEQ_RE.test(s))
            throw new ProtocolError("bad " + what + " " + JSON.stringify(s));
        return decNormalize(s);
    }

    /* ---- the client ---- */

    class WsHub extends EventTarget {
        /* url: "ws[s]://host/ws", "http[s]://..." or "/ws" (relative to the page), or a function
         * returning one of those (or a Promise of one), called before each attempt: the place to
         * put a fresh token. options: see DEFAULTS, plus onMessage, onGap, onState, onWelcome,
         * onError as shortcuts for addEventListener. */
        constructor(url, options) {
            super();
            var o = Object.assign({}, DEFAULTS, options || {});
            o.backoff = Object.assign({}, DEFAULTS.backoff, (options && options.backoff) || {});
            this.url = url;
            this.options = o;
            this.state = "idle"; // idle, connecting, open, reconnecting, closed
            this.epoch = null;   // position: epoch and last processed sequence (decimal string)
            this.last = null;
            this.attempt = 0;    // consecutive failed attempts (the backoff exponent)
            this.stats = { connects: 0, welcomes: 0, messages: 0, gaps: 0, duplicates: 0,
                           ignored: 0 };
            this.lastClose = null; // {code, reason, wasClean} of the last connection
            this._ws = null;
            this._gen = 0;        // bumps on every attempt and on close(): stale callbacks check it
            this._timer = null;   // the reconnect or connect-timeout timer
            this._openedAt = 0;
            this._welcomed = false;
            this._onOnline = null;
            this._storageKey = o.storageKey || (typeof url === "string" ? "wshub:" + url : null);

            var shortcuts = { onMessage: "message", onGap: "gap", onState: "state",
                              onWelcome: "welcome", onError: "error" };
            for (var k in shortcuts)
                if (typeof o[k] === "function")
                    this.addEventListener(shortcuts[k], o[k]);

            this._loadPosition();
            if (o.autoConnect)
                this.connect();
        }

        /* The position to resume from: {epoch, last}, or null when there is none yet (no
         * welcome, and nothing from the position or storage options). */
        get position() {
            return this.last === null ? null : { epoch: this.epoch, last: this.last };
        }

        /* Starts connecting (again, after close() or a 1008). A no-op while connecting or open. */
        connect() {
            if (this.state === "connecting" || this.state === "open")
                return;
            this._clearTimer();
            this._listenOnline(true);
            this.attempt = this.state === "closed" ? 0 : this.attempt;
            this._attempt();
        }

        /* Drops the current connection (if any) and connects again at once, resuming. */
        reconnect() {
            this._drop(1000, "reconnect");
            this._clearTimer();
            this._listenOnline(true);
            this._attempt();
        }

        /* Closes for good: no reconnect until connect(). The position is kept. */
        close(code, reason) {
            if (this.state === "closed")
                return;
            this._gen++;
            this._clearTimer();
            this._listenOnline(false);
            this._drop(code || 1000, reason || "client closed");
            this._setState("closed", { code: code || 1000, reason: reason || "client closed",
                                       byClient: true });
        }

        /* ---- connecting ---- */

        _attempt() {
            var gen = ++this._gen;
            var self = this;
            this._setState("connecting", { attempt: this.attempt });
            var url;
            try {
                url = typeof this.url === "function" ? this.url() : this.url;
            } catch (e) {
                url = Promise.reject(e);
            }
            Promise.resolve(url).then(function (u) {
                if (gen === self._gen)
                    self._open(gen, u);
            }, function (e) {
                if (gen === self._gen)
                    self._failed({ code: 1006, reason: "url: " + e, wasClean: false });
            });
        }

        _open(gen, base) {
            var WS = this.options.WebSocket || root.WebSocket;
            var self = this;
            var ws;
            try {
                ws = new WS(this._resumeUrl(base), SUBPROTOCOL);
            } catch (e) { // a malformed URL: retrying will not fix it
                this._fatal("cannot connect to " + base + ": " + e.message, 1006);
                return;
            }
            ws.binaryType = "arraybuffer";
            this._ws = ws;
            this._welcomed = false;
            this.stats.connects++;
            this._timer = setTimeout(function () {
                if (gen === self._gen && !self._welcomed) {
                    self._drop(1000, "connect timeout");
                    self._failed({ code: 1006, reason: "no welcome within " +
                                   self.options.connectTimeout + " ms", wasClean: false });
                }
            }, this.options.connectTimeout);
            ws.onmessage = function (ev) {
                if (gen === self._gen)
                    self._onFrame(ev.data);
            };
            ws.onclose = function (ev) {
                if (gen === self._gen) {
                    self._ws = null;
                    self._failed({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
                }
            };
            // onerror is always followed by onclose, which has all we can know (a browser hides
            // the HTTP status of a refused upgrade).
        }

        /* The base URL with since and epoch set (when there is a position). */
        _resumeUrl(base) {
            base = String(base);
            if (base.charAt(0) === "/" && root.location) {
                base = (root.location.protocol === "https:" ? "wss://" : "ws://") +
                       root.location.host + base;
            }
            var u = new URL(base.replace(/^http(s?):/i, "ws$1:"));
            u.searchParams.delete("since");
            u.searchParams.delete("epoch");
            if (this.last !== null) {
                u.searchParams.set("since", this.last);
                if (this.epoch !== null)
                    u.searchParams.set("epoch", this.epoch);
            }
            return u.toString();
        }

        /* A connection (or an attempt) ended: retry per the close code, or stop. */
        _failed(close) {
            this._clearTimer();
            this.lastClose = close;
            if (this._welcomed && Date.now() - this._openedAt >= this.options.stableAfter)
                this.attempt = 0;
            this._welcomed = false;
            if (this.options.stopCodes.indexOf(close.code) >= 0) {
                this._gen++;
                this._listenOnline(false);
                this._setState("closed", { code: close.code, reason: close.reason,
                                           byClient: false });
                return;
            }
            var delay;
            if (close.code === 1012) {
                delay = Math.floor(this.options.random() * this.options.restartDelay);
            } else {
                var b = this.options.backoff;
                var ceiling = Math.min(b.cap, b.base * Math.pow(2, this.attempt));
                delay = Math.floor(this.options.random() * ceiling);
                this.attempt++;
            }
            var gen = ++this._gen;
            var self = this;
            this._setState("reconnecting", { code: close.code, reason: close.reason,
                                             delay: delay, attempt: this.attempt });
            this._timer = setTimeout(function () {
                self._timer = null;
                if (gen === self._gen)
                    self._attempt();
            }, delay);
        }

        _fatal(message, code) {
            this._drop(1000, "protocol error");
            this._gen++;
            this._clearTimer();
            this._listenOnline(false);
            this.dispatchEvent(makeEvent("error", { message: message }));
            this._setState("closed", { code: code, reason: message, byClient: false });
        }

        _drop(code, reason) {
            var ws = this._ws;
            this._ws = null;
            if (ws) {
                ws.onmessage = ws.onclose = null;
                try {
                    ws.close(code, reason);
                } catch (e) { // close() accepts only 1000 and 3000-4999 from a client
                    ws.close();
                }
            }
        }

        _clearTimer() {
            if (this._timer !== null) {
                clearTimeout(this._timer);
                this._timer = null;
            }
        }

        _listenOnline(on) {
            var target = root.addEventListener ? root : null;
            if (!target || !this.options.reconnectOnOnline)
                return;
            if (on && !this._onOnline) {
                var self = this;
                this._onOnline = function () {
                    if (self.state === "reconnecting") {
                        self._clearTimer();
                        self._attempt();
                    }
                };
                target.addEventListener("online", this._onOnline);
            } else if (!on && this._onOnline) {
                target.removeEventListener("online", this._onOnline);
                this._onOnline = null;
            }
        }

        _setState(state, detail) {
            var previous = this.state;
            this.state = state;
            this.dispatchEvent(makeEvent("state", Object.assign({ state: state,
                                                                  previous: previous }, detail)));
        }

        /* ---- messages ---- */

        _onFrame(data) {
            var binary = typeof data !== "string";
            var part = binary ? splitBinary(data) : splitText(data);
            var f = part.header.split(" ");
            try {
                if (!this._welcomed) {
                    if (f[0] !== "w")
                        throw new ProtocolError("first message is not a welcome: " +
                                                JSON.stringify(part.header.slice(0, 80)));
                    this._onWelcome(f);
                } else if (f[0] === "m") {
                    this._onMessage(needSeq(f[1], "sequence"), f[2] || null, part.body, binary);
                } else if (f[0] === "g") {
                    this._onGap(needSeq(f[1], "gap start"), needSeq(f[2], "gap end"),
                                f[3] || "unknown");
                } else {
                    this.stats.ignored++; // command replies (s, u, e), types from later versions
                }
            } catch (e) {
                if (!(e instanceof ProtocolError))
                    throw e;
                this._fatal("wshub.v1 protocol error: " + e.message, 1002);
            }
        }

        _onWelcome(f) {
            var epoch = f[1], last = needSeq(f[2], "welcome last"), status = f[3];
            if (typeof epoch !== "string" || !EPOCH_RE.test(epoch))
                throw new ProtocolError("bad epoch " + JSON.stringify(epoch));
            var since = this.last, previousEpoch = this.epoch;
            this._clearTimer();
            this._welcomed = true;
            this._openedAt = Date.now();
            this.stats.welcomes++;
            this.epoch = epoch;
            this.last = last;
            this._savePosition();
            var gen = this._gen;
            this._setState("open", { epoch: epoch, last: last, status: status });
            this.dispatchEvent(makeEvent("welcome", { epoch: epoch, last: last, status: status,
                                                      since: since }));
            if (gen !== this._gen)
                return; // a listener closed or reconnected
            if (status === "expired") {
                this._gap(since === null ? null : decIncrement(since), last, "expired", epoch,
                          previousEpoch);
            } else if (status !== "fresh" && status !== "resumed") {
                // "reset", and any status a later version adds: our position means nothing here
                this._gap(null, last, status || "reset", epoch, previousEpoch);
            }
        }

        _onMessage(seq, channel, body, binary) {
            if (decCompare(seq, this.last) <= 0) {
                this.stats.duplicates++; // the protocol promises this never happens
                return;
            }
            this.last = seq;
            this.stats.messages++;
            this._savePosition();
            this.dispatchEvent(makeEvent("message", { data: body, seq: Number(seq), seqText: seq,
                                                      channel: channel, epoch: this.epoch,
                                                      binary: binary }));
        }

        _onGap(from, to, reason) {
            if (decCompare(to, this.last) > 0) {
                this.last = to;
                this._savePosition();
            }
            this._gap(from, to, reason, this.epoch, this.epoch);
        }

        _gap(from, to, reason, epoch, previousEpoch) {
            this.stats.gaps++;
            this.dispatchEvent(makeEvent("gap", {
                from: from === null ? null : Number(from), fromText: from,
                to: Number(to), toText: to, reason: reason, epoch: epoch,
                previousEpoch: previousEpoch }));
        }

        /* ---- the position in storage ---- */

        _loadPosition() {
            var p = this.options.position;
            if (!p && this.options.storage && this._storageKey) {
                try {
                    p = JSON.parse(this.options.storage.getItem(this._storageKey) || "null");
                } catch (e) {
                    p = null; // unreadable or disabled storage: start fresh
                }
            }
            if (p && SEQ_RE.test(String(p.last))) {
                this.last = decNormalize(String(p.last));
                this.epoch = p.epoch && EPOCH_RE.test(p.epoch) ? p.epoch : null;
            }
        }

        _savePosition() {
            if (!this.options.storage || !this._storageKey)
                return;
            try {
                var value = JSON.stringify({ epoch: this.epoch, last: this.last });
                this.options.storage.setItem(this._storageKey, value);
            } catch (e) {
                // quota or disabled storage: the position is still kept in memory
            }
        }
    }

    WsHub.SUBPROTOCOL = SUBPROTOCOL;
    WsHub.compareSeq = decCompare;

    root.WsHub = WsHub;
    if (typeof module === "object" && module && typeof module.exports === "object")
        module.exports = WsHub;
})(typeof globalThis !== "undefined" ? globalThis : this);
