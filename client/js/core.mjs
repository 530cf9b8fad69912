// The client's protocol state, without I/O (the JavaScript twin of client/core.py).
//
// It keeps what must survive a reconnect: publishes awaiting their ack (in order, each
// with its message_id, made when the caller gives none) and subscriptions with the cursor
// of the last message each received. On a new connection, `opened()` returns the frames
// to send first: every subscription again `from` its cursor, then every unacked publish
// with the same message_id. Request ids are per connection.

export const RATE_LIMITED = 42900;
export const UNAVAILABLE = 50300;

export class ClientError extends Error {
  // `code`: a protocol error code (a number, from the server) or one of the client's own
  // (a string: pending_full, publish_timeout, request_timeout, connection_lost,
  // connect_timeout, unauthorized, closed).
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "ClientError";
    this.code = code;
  }
}

export function errorOf(frame) {
  const err = frame && frame.error;
  if (err && typeof err === "object") {
    return [Number.isInteger(err.code) ? err.code : 50000, String(err.message ?? "")];
  }
  return [50000, "error frame without an error"];
}

// The `fallback_regions` of a `connected` or `disconnect` frame: the strings of a list.
export function regionsOf(frame) {
  const value = frame && frame.fallback_regions;
  return Array.isArray(value) ? value.filter((r) => typeof r === "string") : [];
}

function newMessageId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ClientCore {
  constructor(maxPending) {
    this.maxPending = maxPending;
    this.connected = false;
    this.pending = new Map(); // key -> {key, channel, data, name, messageId, rid}
    this.subs = new Map(); // channel -> {channel, cursor, rewind, rid, confirmed, sent}
    this.nextKey = 1;
    this.nextRid = 1;
    this.open = new Map(); // rid -> ["publish", key] | ["subscribe", channel] | ["plain", null]
  }

  // -- the application's operations ----------------------------------------------------

  publish(channel, data, name, messageId) {
    if (this.pending.size >= this.maxPending) {
      throw new ClientError("pending_full", `${this.pending.size} publishes already await their ack`);
    }
    const p = {
      key: this.nextKey++,
      channel,
      data,
      name: name ?? null,
      messageId: messageId ?? newMessageId(),
      rid: null,
    };
    this.pending.set(p.key, p);
    return { key: p.key, messageId: p.messageId, frame: this.connected ? this.sendPublish(p) : null };
  }

  abandon(key) {
    const p = this.pending.get(key);
    if (p === undefined) return;
    this.pending.delete(key);
    if (p.rid !== null) this.open.delete(p.rid);
  }

  resend(key) {
    const p = this.pending.get(key);
    return p !== undefined && this.connected ? this.sendPublish(p) : null;
  }

  subscribe(channel, cursor, rewind) {
    const old = this.subs.get(channel);
    if (old !== undefined && old.rid !== null) this.open.delete(old.rid);
    const s = { channel, cursor: cursor ?? null, rewind: rewind ?? null, rid: null, confirmed: false, sent: 0 };
    this.subs.set(channel, s);
    return this.connected ? this.sendSubscribe(s) : null;
  }

  unsubscribe(channel) {
    const s = this.subs.get(channel);
    this.subs.delete(channel);
    if (s !== undefined && s.rid !== null) this.open.delete(s.rid);
    return this.connected ? this.request({ type: "unsubscribe", channel }) : null;
  }

  request(frame) {
    const rid = this.nextRid++;
    this.open.set(rid, ["plain", null]);
    return { rid, frame: { ...frame, id: rid } };
  }

  // -- the connection ----------------------------------------------------------------------

  opened() {
    this.connected = true;
    this.open.clear();
    const frames = [];
    for (const s of this.subs.values()) frames.push(this.sendSubscribe(s));
    for (const p of this.pending.values()) frames.push(this.sendPublish(p));
    return frames;
  }

  lost() {
    this.connected = false;
    const plain = [];
    for (const [rid, [kind]] of this.open) if (kind === "plain") plain.push(rid);
    this.open.clear();
    for (const p of this.pending.values()) p.rid = null;
    for (const s of this.subs.values()) {
      s.rid = null;
      s.confirmed = false;
    }
    return plain;
  }

  // What one server frame means: a list of events ({kind, ...}).
  receive(frame) {
    const type = frame && frame.type;
    if (type === "message") return this.message(frame);
    if (type === "disconnect") return [{ kind: "disconnect", frame }];
    const rid = frame && frame.id;
    if (!Number.isInteger(rid) || !this.open.has(rid)) {
      if (type === "error") {
        const [code, message] = errorOf(frame);
        return [{ kind: "unexpected", code, message }];
      }
      return []; // a reply to a request given up on, or of an old connection
    }
    const [what, ref] = this.open.get(rid);
    this.open.delete(rid);
    if (what === "publish") return this.publishReply(ref, frame);
    if (what === "subscribe") return this.subscribeReply(ref, rid, frame);
    return [{ kind: "reply", rid, frame }];
  }

  // -- inside ------------------------------------------------------------------------------

  sendPublish(p) {
    p.rid = this.nextRid++;
    this.open.set(p.rid, ["publish", p.key]);
    const frame = { type: "publish", id: p.rid, channel: p.channel, data: p.data, message_id: p.messageId };
    if (p.name !== null) frame.name = p.name;
    return frame;
  }

  sendSubscribe(s) {
    s.rid = this.nextRid++;
    s.confirmed = false;
    s.sent += 1;
    this.open.set(s.rid, ["subscribe", s.channel]);
    const frame = { type: "subscribe", id: s.rid, channel: s.channel };
    if (s.cursor !== null) frame.from = { cursor: s.cursor };
    else if (s.rewind !== null) frame.from = { rewind: s.rewind };
    return frame;
  }

  message(frame) {
    if (typeof frame.channel !== "string" || typeof frame.cursor !== "string") {
      return [{ kind: "unexpected", code: 50000, message: "unreadable message frame" }];
    }
    const s = this.subs.get(frame.channel);
    if (s === undefined || !s.confirmed) return []; // unsubscribed, or before a restart
    s.cursor = frame.cursor;
    return [{ kind: "delivered", message: frame }];
  }

  publishReply(key, frame) {
    const p = this.pending.get(key);
    if (p === undefined) return [];
    if (frame.type === "ack") {
      this.pending.delete(key);
      return [{ kind: "acked", key, ack: { serial: frame.serial, messageId: frame.message_id, duplicate: frame.duplicate === true } }];
    }
    const [code, message] = errorOf(frame);
    p.rid = null;
    if (code === RATE_LIMITED) return [{ kind: "retryLater", key }];
    if (code === UNAVAILABLE) return [{ kind: "unavailable", code, message }];
    this.pending.delete(key);
    return [{ kind: "publishRefused", key, code, message }];
  }

  subscribeReply(channel, rid, frame) {
    const s = this.subs.get(channel);
    if (s === undefined || s.rid !== rid) return [];
    if (frame.type === "subscribed") {
      if (s.cursor === null && typeof frame.cursor === "string") s.cursor = frame.cursor;
      s.confirmed = true;
      const recovered = typeof frame.recovered === "boolean" ? frame.recovered : null;
      return [{ kind: "subscribed", channel, recovered, resumed: s.sent > 1 }];
    }
    const [code, message] = errorOf(frame);
    if (code === UNAVAILABLE) return [{ kind: "unavailable", code, message }];
    this.subs.delete(channel);
    return [{ kind: "subscribeRefused", channel, code, message }];
  }
}

// The `disconnect` reasons that send the client away (to `fallback_regions`); any other
// (slow_consumer, rate_limited, token_expired...) is about the connection, not the edge.
export const SENDS_AWAY = new Set(["draining", "shutdown", "edge_full"]);

// Where to connect next: candidates by region, nearest first; see client/endpoints.py.
export class Endpoints {
  constructor(regions) {
    this.set(regions);
  }

  set(regions) {
    this.order = [];
    for (const r of regions) for (const url of r.urls) this.order.push([r.region, url]);
    if (this.order.length === 0) throw new Error("no edge URL to connect to");
    this.position = 0;
    this.triedAll = false;
  }

  next() {
    const chosen = this.order[this.position];
    this.position += 1;
    if (this.position === this.order.length) {
      this.position = 0;
      this.triedAll = true;
    }
    return chosen;
  }

  worked() {
    this.position = 0;
    this.triedAll = false;
  }

  prefer(regions, avoid) {
    const rank = new Map(regions.map((r, i) => [r, i]));
    const keyed = this.order.map((c, i) => [c[1] === avoid ? 1 : 0, rank.has(c[0]) ? rank.get(c[0]) : rank.size, i, c]);
    keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    this.order = keyed.map((k) => k[3]);
    this.position = 0;
    this.triedAll = false;
  }
}

export function fromRoute(doc) {
  const out = [{ region: String(doc.region), urls: (doc.edges ?? []).map(String) }];
  for (const f of doc.fallbacks ?? []) out.push({ region: String(f.region), urls: (f.edges ?? []).map(String) });
  return out.filter((r) => r.urls.length > 0);
}

// Exponential backoff with full jitter.
export class Backoff {
  constructor(baseS, maxS, draw = Math.random) {
    this.baseS = baseS;
    this.maxS = maxS;
    this.draw = draw;
    this.attempt = 0;
  }

  next() {
    const ceiling = Math.min(this.maxS, this.baseS * 2 ** Math.min(this.attempt, 32));
    this.attempt += 1;
    return ceiling * this.draw();
  }

  reset() {
    this.attempt = 0;
  }
}
