// Unit tests of the JavaScript client's pure core (node --test); run by
// tests/test_client_js.py. The twin of tests/test_client_core.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, ClientCore, ClientError, Endpoints, SENDS_AWAY, fromRoute, regionsOf } from "../../client/js/core.mjs";

const message = (channel, cursor, i = 0) => ({
  type: "message", channel, id: `m${i}`, name: null, data: i, client_id: "a",
  region: "eu", serial: `eu:${i}`, cursor, timestamp: 1,
});

test("pending publishes go again in order with the same ids, new request ids", () => {
  const c = new ClientCore(10);
  const made = [0, 1, 2].map((i) => c.publish("ch", i, null, i === 1 ? "k" : undefined));
  assert.ok(made.every((m) => m.frame === null));
  const frames = c.opened();
  assert.deepEqual(frames.map((f) => f.data), [0, 1, 2]);
  assert.equal(frames[1].message_id, "k");
  assert.match(frames[0].message_id, /^c-[0-9a-f]{32}$/);
  assert.deepEqual(c.lost(), []);
  const again = c.opened();
  assert.deepEqual(again.map((f) => f.message_id), frames.map((f) => f.message_id));
  assert.ok(again.every((f) => !frames.some((g) => g.id === f.id)));
  assert.deepEqual(c.receive({ type: "ack", id: frames[0].id, serial: "x", message_id: "y" }), []);
});

test("the pending limit, at its boundary", () => {
  const c = new ClientCore(3);
  c.opened();
  const sent = [0, 1, 2].map((i) => c.publish("ch", i));
  assert.throws(() => c.publish("ch", 3), (err) => err instanceof ClientError && err.code === "pending_full");
  const [ev] = c.receive({ type: "ack", id: sent[0].frame.id, serial: "eu:1", message_id: sent[0].messageId });
  assert.equal(ev.kind, "acked");
  c.publish("ch", 3); // room again
});

test("nacks by code", () => {
  const c = new ClientCore(10);
  c.opened();
  const [a, b, d] = [1, 2, 3].map((i) => c.publish("ch", i));
  const nack = (p, code) => c.receive({ type: "nack", id: p.frame.id, error: { code, message: "m" } });
  assert.deepEqual(nack(a, 40300), [{ kind: "publishRefused", key: a.key, code: 40300, message: "m" }]);
  assert.deepEqual(nack(b, 42900), [{ kind: "retryLater", key: b.key }]);
  assert.equal(c.resend(b.key).message_id, b.messageId);
  assert.deepEqual(nack(d, 50300), [{ kind: "unavailable", code: 50300, message: "m" }]);
  assert.ok(c.pending.has(d.key) && !c.pending.has(a.key));
});

test("a subscription resumes from the last cursor it received", () => {
  const c = new ClientCore(10);
  c.opened();
  const f = c.subscribe("ch", undefined, 5);
  assert.deepEqual(f.from, { rewind: 5 });
  const [ok] = c.receive({ type: "subscribed", id: f.id, channel: "ch", cursor: "c0" });
  assert.deepEqual(ok, { kind: "subscribed", channel: "ch", recovered: null, resumed: false });
  assert.equal(c.receive(message("ch", "c1", 1))[0].kind, "delivered");
  c.lost();
  const [again] = c.opened();
  assert.deepEqual(again.from, { cursor: "c1" });
  assert.deepEqual(c.receive(message("ch", "c9", 9)), []); // before `subscribed`
  const [resumed] = c.receive({ type: "subscribed", id: again.id, channel: "ch", cursor: "c5", recovered: false });
  assert.deepEqual(resumed, { kind: "subscribed", channel: "ch", recovered: false, resumed: true });
  assert.equal(c.subs.get("ch").cursor, "c1");
});

test("a refused subscribe is dropped, an unavailable one kept", () => {
  const c = new ClientCore(10);
  c.opened();
  const f = c.subscribe("no");
  const err = (code) => ({ type: "error", id: f.id, error: { code, message: "m" } });
  assert.equal(c.receive(err(40300))[0].kind, "subscribeRefused");
  assert.ok(!c.subs.has("no"));
  const g = c.subscribe("later");
  assert.equal(c.receive({ type: "error", id: g.id, error: { code: 50300, message: "m" } })[0].kind, "unavailable");
  assert.ok(c.subs.has("later"));
});

test("endpoints rotate, start over after success, prefer what the server names", () => {
  const e = new Endpoints([{ region: "eu", urls: ["e1", "e2"] }, { region: "us", urls: ["u1"] }, { region: "ap", urls: ["a1"] }]);
  assert.deepEqual([1, 2, 3, 4].map(() => e.next()[1]), ["e1", "e2", "u1", "a1"]);
  assert.ok(e.triedAll);
  e.worked();
  assert.equal(e.next()[1], "e1");
  e.prefer(["eu", "ap"], "e1");
  assert.deepEqual([1, 2, 3, 4].map(() => e.next()[1]), ["e2", "a1", "u1", "e1"]);
  assert.deepEqual(fromRoute({ region: "eu", edges: ["x"], fallbacks: [{ region: "us", edges: [] }] }), [{ region: "eu", urls: ["x"] }]);
  assert.throws(() => new Endpoints([]));
});

test("backoff grows to its cap", () => {
  const b = new Backoff(100, 1000, () => 1);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => b.next()), [100, 200, 400, 800, 1000, 1000]);
  b.reset();
  assert.equal(b.next(), 100);
});

test("no server frame breaks the core", () => {
  const c = new ClientCore(10);
  c.opened();
  c.publish("ch", 1);
  c.subscribe("ch");
  const odd = [null, 7, "text", [1, 2], {}, { type: "message" }, { type: "message", channel: "ch", cursor: 3 },
    { type: "ack", id: 1 }, { type: "nack", id: 2, error: "x" }, { type: "subscribed", id: 2, cursor: {} },
    { type: "error", error: null }, { type: "disconnect", fallback_regions: 5 }, { type: "pong", id: "1" }];
  for (const frame of odd) assert.ok(Array.isArray(c.receive(frame)));
  assert.deepEqual(regionsOf({ fallback_regions: 5 }), []);
  assert.deepEqual(regionsOf({ fallback_regions: ["us", 1, null, "ap"] }), ["us", "ap"]);
  assert.deepEqual(regionsOf(null), []);
  c.lost();
  c.opened();
});

test("only a drain, a shutdown or a full edge sends the client to other regions", () => {
  assert.deepEqual([...SENDS_AWAY].sort(), ["draining", "edge_full", "shutdown"]);
  for (const reason of ["slow_consumer", "rate_limited", "token_expired"]) assert.ok(!SENDS_AWAY.has(reason));
});
