// The edgemesh client for browsers and Node.js (22+, or 20 with --experimental-websocket):
// the JavaScript twin of the Python client (docs/client.md). No dependencies: it uses the
// standard WebSocket and fetch.
//
// It reconnects (other edges, the regions a `disconnect` names, or where the route API
// says), subscribes again from each channel's cursor, sends unacked publishes again with
// the same message_id, and asks `getToken` for a new token when one is refused.

import { Backoff, ClientCore, ClientError, Endpoints, SENDS_AWAY, errorOf, fromRoute, regionsOf } from "./core.mjs";

export { ClientError } from "./core.mjs";

export const DEFAULTS = Object.freeze({
  connectTimeoutMs: 20000, // connect() rejects (and closes) when no edge accepted it by then
  openTimeoutMs: 5000, // one attempt: open and the `connected` frame
  requestTimeoutMs: 10000, // subscribe, history, ping
  publishTimeoutMs: 60000, // publish to ack, retries included (keep under the dedup window)
  maxPendingPublishes: 1000, // publishes awaiting their ack; one more is refused
  maxBufferedMessages: 10000, // per subscription, not taken; then the client pauses reading
  reconnectBaseMs: 100,
  reconnectMaxMs: 5000,
  pingIntervalMs: 15000, // a `ping` frame this often; no `pong` within pingTimeoutMs: reconnect
  pingTimeoutMs: 15000,
  rateLimitedRetryMs: 500,
  routeRefreshMs: 30000, // with routeUrls, after a failover: how often to ask whether to go back
});

const AUTH_CLOSE = 4001;
const PAUSE_CLOSE = 4000; // the client's own close while a subscription is full

function checkSettings(given) {
  const s = { ...DEFAULTS, ...given };
  for (const [k, v] of Object.entries(s)) {
    if (!(k in DEFAULTS)) throw new TypeError(`unknown setting ${k}`);
    if (typeof v !== "number" || !(v > 0)) throw new RangeError(`${k} must be a positive number, not ${v}`);
  }
  if (s.reconnectMaxMs < s.reconnectBaseMs) throw new RangeError("reconnectMaxMs is below reconnectBaseMs");
  return Object.freeze(s);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // a rejection nobody waits for is not an error
  return { promise, resolve, reject };
}

function withTimeout(promise, ms, error) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class Subscription {
  constructor(client, channel, maxBuffered, onDiscontinuity) {
    this.channel = channel;
    this.discontinuities = 0;
    this.resumes = 0;
    this.onDiscontinuity = onDiscontinuity ?? null;
    this.client = client;
    this.maxBuffered = maxBuffered;
    this.items = [];
    this.ended = null;
    this.waiter = null;
    this.roomWaiters = [];
    this.ready = deferred();
  }

  get cursor() {
    const s = this.client.core.subs.get(this.channel);
    return s === undefined ? null : s.cursor;
  }

  get full() {
    return this.items.length >= this.maxBuffered;
  }

  push(message) {
    if (this.ended !== null) return;
    this.items.push(message);
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve();
    }
  }

  end(why) {
    if (this.ended === null) this.ended = why;
    this.ready.reject(why);
    if (this.waiter !== null) this.waiter.resolve();
    for (const w of this.roomWaiters.splice(0)) w();
  }

  room() {
    if (!this.full || this.ended !== null) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  // The next message; resolves {done: true} once the subscription ended and nothing is left.
  async next() {
    while (this.items.length === 0) {
      if (this.ended !== null) return { done: true, value: undefined };
      this.waiter = deferred();
      await this.waiter.promise;
    }
    const value = this.items.shift();
    if (!this.full) for (const w of this.roomWaiters.splice(0)) w();
    return { done: false, value };
  }

  [Symbol.asyncIterator]() {
    return { next: () => this.next() };
  }

  unsubscribe() {
    return this.client.unsubscribe(this.channel);
  }
}

export class EdgemeshClient {
  // options: token (string) or getToken (async () => string); urls, regions ({name: [urls]},
  // nearest first) or routeUrls (control-plane base URLs); settings (see DEFAULTS);
  // onState(state); WebSocket (an implementation, default the global one).
  constructor(options) {
    const { token, getToken, urls = [], regions = {}, routeUrls = [], settings = {}, onState } = options;
    if (token === undefined && getToken === undefined) throw new TypeError("give token or getToken");
    const given = [];
    if (urls.length) given.push({ region: "", urls: [...urls] });
    for (const [region, list] of Object.entries(regions)) if (list.length) given.push({ region, urls: [...list] });
    if (!given.length && !routeUrls.length) throw new TypeError("give urls, regions or routeUrls");
    this.settings = checkSettings(settings);
    this.token = token;
    this.getToken = getToken ?? null;
    this.routeUrls = [...routeUrls];
    this.endpoints = given.length ? new Endpoints(given) : null;
    this.backoff = new Backoff(this.settings.reconnectBaseMs, this.settings.reconnectMaxMs);
    this.core = new ClientCore(this.settings.maxPendingPublishes);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") throw new TypeError("no WebSocket implementation");
    this.onState = onState ?? null;
    this.state = "idle"; // idle, connecting, connected, closed, failed
    this.connection = null; // the current connection's `connected` frame
    this.connections = 0;
    this.publishes = new Map(); // key -> deferred
    this.requests = new Map(); // rid -> deferred
    this.subs = new Map(); // channel -> Subscription
    this.ws = null;
    this.up = deferred();
    this.isUp = false;
    this.failure = null;
    this.closing = false;
    this.running = null;
    this.home = null; // the route API's first region, once it answered
    this.maxMessageBytes = null; // from the last `connected` frame
  }

  // -- lifecycle --------------------------------------------------------------------------

  async connect() {
    if (this.running === null) this.running = this.run();
    try {
      await this.waitUp(this.settings.connectTimeoutMs, "connect_timeout");
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  async close() {
    if (this.closing) return;
    this.closing = true;
    this.failAll(this.failure ?? new ClientError("closed", "the client was closed"));
    if (this.ws !== null) this.ws.close(1000);
    if (this.wakeRun) this.wakeRun();
    if (this.running !== null) await this.running;
    if (this.state !== "failed") this.setState("closed");
  }

  // -- operations -----------------------------------------------------------------------------

  async publish(channel, data, { name, messageId } = {}) {
    this.checkUsable();
    if (this.maxMessageBytes !== null) {
      // Checked here as the edge checks it: a frame far over the limit would make the edge
      // close the connection (4009), again after every reconnect.
      const size = new TextEncoder().encode(JSON.stringify(data)).length;
      if (size > this.maxMessageBytes) {
        throw new ClientError(41300, `data is ${size} bytes, over max_message_bytes (${this.maxMessageBytes})`);
      }
    }
    const { key, messageId: mid, frame } = this.core.publish(channel, data, name, messageId);
    const d = deferred();
    this.publishes.set(key, d);
    if (frame !== null) this.send(frame);
    try {
      return await withTimeout(d.promise, this.settings.publishTimeoutMs, () => {
        const err = new ClientError("publish_timeout", `no ack for ${mid} within ${this.settings.publishTimeoutMs} ms`);
        err.messageId = mid;
        return err;
      });
    } finally {
      this.publishes.delete(key);
      this.core.abandon(key);
    }
  }

  async subscribe(channel, { cursor, rewind, onDiscontinuity } = {}) {
    this.checkUsable();
    const sub = new Subscription(this, channel, this.settings.maxBufferedMessages, onDiscontinuity);
    const old = this.subs.get(channel);
    if (old !== undefined) old.end(new ClientError("closed", "subscribed again"));
    this.subs.set(channel, sub);
    const frame = this.core.subscribe(channel, cursor, rewind);
    if (frame !== null) this.send(frame);
    try {
      await withTimeout(sub.ready.promise, this.settings.requestTimeoutMs, () => new ClientError("request_timeout", `no reply to subscribe ${channel}`));
    } catch (err) {
      this.dropSub(channel);
      throw err;
    }
    return sub;
  }

  async unsubscribe(channel) {
    const sub = this.subs.get(channel);
    this.dropSub(channel);
    if (sub !== undefined) sub.end(new ClientError("closed", "unsubscribed"));
  }

  async history(channel, { limit = 100, after } = {}) {
    const frame = { type: "history", channel, limit };
    if (after !== undefined) frame.after = after;
    const reply = await this.request(frame);
    if (reply.type !== "history_page") throw new ClientError(...errorOf(reply));
    return reply;
  }

  async ping() {
    await this.request({ type: "ping" });
  }

  // -- inside: the connection loop -------------------------------------------------------

  async run() {
    while (!this.closing) {
      const pause = await this.attempt();
      if (pause === null || this.closing) break;
      await new Promise((resolve) => {
        this.wakeRun = resolve;
        setTimeout(resolve, pause);
      });
      // A full subscription paused the connection: wait until every one has room.
      await Promise.all([...this.subs.values()].map((s) => s.room()));
    }
    this.hangUp();
  }

  async candidates() {
    if (this.routeUrls.length && (this.endpoints === null || this.endpoints.triedAll)) {
      const regions = await this.route();
      if (regions.length) {
        if (this.endpoints === null) this.endpoints = new Endpoints(regions);
        else this.endpoints.set(regions);
      }
    }
    while (this.endpoints === null && !this.closing) {
      await sleep(this.backoff.next());
      const regions = await this.route();
      if (regions.length) this.endpoints = new Endpoints(regions);
    }
    return this.endpoints;
  }

  async route() {
    for (const base of this.routeUrls) {
      try {
        const r = await fetch(base.replace(/\/$/, "") + "/v1/route", { signal: AbortSignal.timeout(this.settings.openTimeoutMs) });
        if (r.ok) {
          const regions = fromRoute(await r.json());
          if (regions.length) this.home = regions[0].region;
          return regions;
        }
      } catch {
        // the next control plane
      }
    }
    return [];
  }

  // One connection from opening to its end; resolves how long to wait before the next
  // attempt, or null when the client failed for good.
  async attempt() {
    this.setState("connecting");
    const endpoints = await this.candidates();
    if (endpoints === null) return null;
    const [, url] = endpoints.next();
    let token;
    try {
      token = this.getToken !== null ? await this.getToken() : this.token;
    } catch {
      return this.backoff.next();
    }
    const sep = url.includes("?") ? "&" : "?";
    let ws;
    try {
      ws = new this.WebSocket(`${url}${sep}token=${encodeURIComponent(token)}`);
    } catch {
      return this.backoff.next();
    }
    this.ws = ws;
    return await new Promise((resolve) => {
      let hello = null;
      let said = null;
      let pingTimer = null;
      let pongTimer = null;
      let homeTimer = null;
      // Connected outside the route's first region (after a failover): ask the route API
      // every routeRefreshMs; once it names another region first, go there.
      const watchHome = () => {
        homeTimer = setTimeout(async () => {
          const regions = await this.route();
          if (regions.length && regions[0].region !== hello.region) {
            this.endpoints.set(regions);
            ws.close();
          } else if (ws.readyState === 1) watchHome();
        }, this.settings.routeRefreshMs);
      };
      const openTimer = setTimeout(() => ws.close(), this.settings.openTimeoutMs);
      const schedulePing = () => {
        pingTimer = setTimeout(() => {
          const { rid, frame } = this.core.request({ type: "ping" });
          this.requests.set(rid, { resolve: () => { clearTimeout(pongTimer); schedulePing(); }, reject: () => {} });
          this.send(frame);
          pongTimer = setTimeout(() => ws.close(), this.settings.pingTimeoutMs);
        }, this.settings.pingIntervalMs);
      };
      ws.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (hello === null) {
          clearTimeout(openTimer);
          if (frame === null || typeof frame !== "object" || frame.type !== "connected") {
            said = frame;
            ws.close();
            return;
          }
          hello = frame;
          this.connection = frame;
          if (Number.isInteger(frame.max_message_bytes) && frame.max_message_bytes > 0) this.maxMessageBytes = frame.max_message_bytes;
          this.connections += 1;
          endpoints.worked();
          this.backoff.reset();
          for (const f of this.core.opened()) ws.send(JSON.stringify(f));
          this.setState("connected");
          this.isUp = true;
          this.up.resolve();
          schedulePing();
          if (this.routeUrls.length && this.home !== null && hello.region !== this.home) watchHome();
          return;
        }
        for (const e of this.core.receive(frame)) {
          if (e.kind === "disconnect") said = e.frame;
          else if (e.kind === "unavailable") {
            endpoints.prefer(regionsOf(hello), url);
            ws.close();
          } else this.handle(e, ws);
        }
      };
      ws.onclose = (event) => {
        clearTimeout(openTimer);
        clearTimeout(pingTimer);
        clearTimeout(pongTimer);
        clearTimeout(homeTimer);
        this.hangUp();
        resolve(this.after(event.code, hello, said, url, endpoints));
      };
      ws.onerror = () => {}; // onclose follows
    });
  }

  after(code, hello, said, url, endpoints) {
    if (this.closing) return null;
    if (said !== null && said.type === "error") {
      const [errCode, message] = errorOf(said);
      if (errCode === 40100 || errCode === 40101) return this.authRefused(errCode, message);
    }
    if (code === AUTH_CLOSE || (said !== null && said.reason === "token_expired")) {
      return this.authRefused(40101, "token refused");
    }
    if (said !== null && said.type === "disconnect") {
      if (SENDS_AWAY.has(said.reason)) endpoints.prefer(regionsOf(said), url);
      // A random wait within retry_after_ms: the clients an edge sends away at once come
      // to their next edge spread over that window.
      const after = Number.isFinite(said.retry_after_ms) ? said.retry_after_ms : 0;
      return Math.max(after * Math.random(), this.backoff.next());
    }
    return this.backoff.next();
  }

  authRefused(code, message) {
    if (this.getToken === null) {
      this.failure = new ClientError("unauthorized", `token refused (${code}: ${message})`);
      this.failAll(this.failure);
      this.setState("failed");
      return null;
    }
    return this.backoff.next();
  }

  hangUp() {
    this.ws = null;
    this.connection = null;
    if (this.state === "connected") this.setState("connecting"); // the pause before it included
    // Waiters for the next connection wait on a new promise (the old one has resolved).
    if (this.isUp && !this.closing && this.failure === null) this.up = deferred();
    this.isUp = false;
    for (const rid of this.core.lost()) {
      const d = this.requests.get(rid);
      this.requests.delete(rid);
      if (d !== undefined) d.reject(new ClientError("connection_lost", "the connection ended"));
    }
  }

  handle(e, ws) {
    switch (e.kind) {
      case "delivered": {
        const sub = this.subs.get(e.message.channel);
        if (sub !== undefined) {
          sub.push(e.message);
          if (sub.full && ws.readyState === 1) ws.close(PAUSE_CLOSE, "a subscription is full");
        }
        break;
      }
      case "acked":
        this.publishes.get(e.key)?.resolve(e.ack);
        break;
      case "publishRefused":
        this.publishes.get(e.key)?.reject(new ClientError(e.code, e.message));
        break;
      case "retryLater":
        setTimeout(() => {
          const frame = this.core.resend(e.key);
          if (frame !== null) this.send(frame);
        }, this.settings.rateLimitedRetryMs);
        break;
      case "subscribed": {
        const sub = this.subs.get(e.channel);
        if (sub === undefined) break;
        sub.ready.resolve();
        if (e.resumed) sub.resumes += 1;
        if (e.recovered === false) {
          sub.discontinuities += 1;
          if (sub.onDiscontinuity) sub.onDiscontinuity(sub);
        }
        break;
      }
      case "subscribeRefused": {
        const sub = this.subs.get(e.channel);
        this.subs.delete(e.channel);
        if (sub !== undefined) sub.end(new ClientError(e.code, e.message));
        break;
      }
      case "reply": {
        const d = this.requests.get(e.rid);
        this.requests.delete(e.rid);
        if (d !== undefined) d.resolve(e.frame);
        break;
      }
      default:
        break; // unexpected: nothing waits for it
    }
  }

  // -- inside: small parts ------------------------------------------------------------------

  send(frame) {
    if (this.ws !== null && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  async request(frame) {
    this.checkUsable();
    const started = Date.now();
    await this.waitUp(this.settings.requestTimeoutMs, "request_timeout");
    const { rid, frame: doc } = this.core.request(frame);
    const d = deferred();
    this.requests.set(rid, d);
    this.send(doc);
    const left = Math.max(0, this.settings.requestTimeoutMs - (Date.now() - started));
    try {
      return await withTimeout(d.promise, left, () => new ClientError("request_timeout", `no reply to ${frame.type}`));
    } finally {
      this.requests.delete(rid);
    }
  }

  async waitUp(ms, code) {
    if (this.failure !== null) throw this.failure;
    await withTimeout(this.up.promise, ms, () => new ClientError(code, `not connected within ${ms} ms`));
    if (this.failure !== null) throw this.failure;
    if (this.closing) throw new ClientError("closed", "the client was closed");
  }

  dropSub(channel) {
    this.subs.delete(channel);
    const sent = this.core.unsubscribe(channel);
    if (sent !== null) this.send(sent.frame);
  }

  checkUsable() {
    if (this.failure !== null) throw this.failure;
    if (this.closing) throw new ClientError("closed", "the client is closed");
    if (this.running === null) throw new ClientError("closed", "the client is not connected: call connect()");
  }

  failAll(why) {
    for (const d of this.publishes.values()) d.reject(why);
    for (const d of this.requests.values()) d.reject(why);
    for (const sub of this.subs.values()) sub.end(why);
    this.subs.clear();
    this.up.resolve(); // waiters wake and see the failure
  }

  setState(state) {
    if (state !== this.state) {
      this.state = state;
      if (this.onState) this.onState(state);
    }
  }
}
