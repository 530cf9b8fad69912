// Scenarios for tests/test_client_js.py: the JavaScript client against real edges.
//
//   node scenario.mjs NAME '{"ws": {...}, "http": {...}, "apiKey": "...", "token": "..."}'
//
// Prints JSON lines: {"event": "progress"} when the test should act (it then waits for
// a line on stdin before it goes on), and last {"event": "result", ...}.

import { createInterface } from "node:readline";

import { EdgemeshClient } from "../../client/js/client.mjs";

const [name, raw] = process.argv.slice(2);
const cfg = JSON.parse(raw);
const FAST = { reconnectBaseMs: 50, reconnectMaxMs: 500, openTimeoutMs: 3000 };
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const say = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const regions = (...names) => Object.fromEntries(names.map((r) => [r, [cfg.ws[r]]]));

async function progress(detail) {
  say({ event: "progress", ...detail });
  await lines.next(); // the test has acted
}

async function take(sub, n, withinMs = 60000) {
  const out = [];
  const deadline = Date.now() + withinMs;
  while (out.length < n) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`only ${out.length} of ${n} messages`);
    let timer;
    const next = await Promise.race([
      sub.next(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`only ${out.length} of ${n} messages`)), left);
      }),
    ]).finally(() => clearTimeout(timer));
    if (next.done) throw new Error("the subscription ended");
    out.push(next.value);
  }
  return out;
}

async function codeOf(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return err.code ?? String(err);
  }
}

async function mintToken(clientId, caps, ttlS) {
  const r = await fetch(cfg.http.eu + "/v1/tokens", {
    method: "POST",
    headers: { Authorization: `Bearer ${cfg.apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ client_id: clientId, capabilities: caps, ttl_s: ttlS }),
  });
  if (!r.ok) throw new Error(`token: ${r.status}`);
  return (await r.json()).token;
}

const scenarios = {
  async basic() {
    const sub = new EdgemeshClient({ token: cfg.token, regions: regions("us"), settings: FAST });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("eu"), settings: FAST });
    const limited = new EdgemeshClient({
      token: await mintToken("lim", { "ok:*": ["subscribe", "publish"] }, 600),
      regions: regions("eu"),
      settings: FAST,
    });
    await Promise.all([sub.connect(), pub.connect(), limited.connect()]);
    const s = await sub.subscribe("js:basic");
    const acks = [];
    for (let i = 0; i < 50; i++) acks.push(await pub.publish("js:basic", { i }, { name: "n" }));
    const got = await take(s, 50);
    const page = await sub.history("js:basic", { limit: 100 });
    const again = await pub.publish("js:basic", { i: 0 }, { messageId: acks[0].messageId });
    const live = await limited.subscribe("ok:live");
    const errors = {
      badChannel: await codeOf(limited.publish("a b", 1)),
      forbidden: await codeOf(limited.publish("secret", 1)),
      forbiddenSubscribe: await codeOf(limited.subscribe("secret")),
      tooLarge: await codeOf(limited.publish("ok:live", "x".repeat(limited.connection.max_message_bytes + 1))),
    };
    const fine = await limited.publish("ok:live", "fine");
    const [after] = await take(live, 1, 10000);
    // The size limit at its boundary (a string's quotes count), and far over it.
    const limit = limited.connection.max_message_bytes;
    const atLimit = await limited.publish("ok:live", "y".repeat(limit - 2));
    const [atLimitGot] = await take(live, 1, 10000);
    errors.overByOne = await codeOf(limited.publish("ok:live", "y".repeat(limit - 1)));
    errors.farOver = await codeOf(limited.publish("ok:live", "z".repeat(limit + 20000)));
    const kanji = "日".repeat(Math.floor((limit - 2) / 3));
    await limited.publish("ok:live", kanji);
    const [kanjiGot] = await take(live, 1, 10000);
    const result = {
      regions: [sub.connection.region, pub.connection.region],
      data: got.map((m) => m.data.i),
      idsMatch: got.every((m, k) => m.id === acks[k].messageId),
      serialsFromEu: acks.every((a) => a.serial.startsWith("eu:") && !a.duplicate),
      historyMatches: page.messages.map((m) => m.serial).join() === acks.map((a) => a.serial).join(),
      duplicate: again.duplicate && again.serial === acks[0].serial,
      errors,
      unharmed: after.id === fine.messageId && limited.connections === 1,
      atLimit: atLimitGot.id === atLimit.messageId && kanjiGot.data === kanji && limited.connections === 1,
    };
    await Promise.all([sub.close(), pub.close(), limited.close()]);
    return result;
  },

  // The subscriber's edge (us) gets SIGTERM at the progress mark.
  async follow() {
    const subC = new EdgemeshClient({ token: cfg.token, regions: regions("us", "ap"), settings: FAST });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("eu"), settings: FAST });
    await Promise.all([subC.connect(), pub.connect()]);
    const s = await subC.subscribe("js:follow");
    const n = 300;
    const sent = [];
    const publishing = (async () => {
      for (let i = 0; i < n; i++) {
        sent.push((await pub.publish("js:follow", i)).messageId);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const got = await take(s, 100);
    await progress({ received: got.length });
    got.push(...(await take(s, n - 100)));
    await publishing;
    const result = {
      data: got.map((m) => m.data),
      idsMatch: got.map((m) => m.id).join() === sent.join(),
      connections: subC.connections,
      region: subC.connection.region,
      resumes: s.resumes,
      discontinuities: s.discontinuities,
    };
    await Promise.all([subC.close(), pub.close()]);
    return result;
  },

  // The publisher's edge (eu) gets SIGKILL at the progress mark.
  async publisher() {
    const subC = new EdgemeshClient({ token: cfg.token, regions: regions("ap"), settings: FAST });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("eu", "us"), settings: FAST });
    await Promise.all([subC.connect(), pub.connect()]);
    const s = await subC.subscribe("js:kill");
    const n = 300;
    const acks = [];
    for (let i = 0; i < n; i++) {
      if (i === 100) await progress({ acked: i });
      acks.push(await pub.publish("js:kill", i));
    }
    const got = await take(s, n);
    const result = {
      data: got.map((m) => m.data),
      distinct: new Set(got.map((m) => m.id)).size,
      connections: pub.connections,
      region: pub.connection.region,
      origins: [...new Set(acks.map((a) => a.serial.split(":")[0]))].sort(),
    };
    await Promise.all([subC.close(), pub.close()]);
    return result;
  },

  // Tokens from POST /v1/tokens that live 2 s: the client asks for a new one each time.
  async token() {
    let minted = 0;
    const getToken = async () => {
      minted += 1;
      return mintToken("rotating", { "*": ["subscribe", "publish"] }, 2);
    };
    const subC = new EdgemeshClient({ getToken, regions: regions("us"), settings: FAST });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("eu"), settings: FAST });
    await Promise.all([subC.connect(), pub.connect()]);
    const s = await subC.subscribe("js:token");
    const sent = [];
    const deadline = Date.now() + 30000;
    while (subC.connections < 2 || sent.length < 20) {
      if (Date.now() > deadline) throw new Error("the token never expired");
      sent.push((await pub.publish("js:token", sent.length)).messageId);
      await new Promise((r) => setTimeout(r, 50));
    }
    // A few more once the new connection is made: they reach the subscriber only through
    // its subscription resumed there.
    for (let k = 0; k < 5; k++) sent.push((await pub.publish("js:token", sent.length)).messageId);
    const got = await take(s, sent.length);
    const result = {
      idsMatch: got.map((m) => m.id).join() === sent.join(),
      minted,
      resumes: s.resumes,
      discontinuities: s.discontinuities,
    };
    await Promise.all([subC.close(), pub.close()]);
    return result;
  },

  // maxBufferedMessages = 5: a full subscription closes the connection (4000) and the
  // client resumes from its cursor once there is room; nothing is lost or repeated.
  async full() {
    const reader = new EdgemeshClient({ token: cfg.token, regions: regions("us"), settings: { ...FAST, maxBufferedMessages: 5 } });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("eu"), settings: FAST });
    await Promise.all([reader.connect(), pub.connect()]);
    const s = await reader.subscribe("js:full");
    const sent = [];
    for (let i = 0; i < 300; i++) sent.push((await pub.publish("js:full", i)).messageId);
    const paused = await new Promise((resolve) => {
      const deadline = Date.now() + 10000;
      const check = () => {
        if (reader.state !== "connected" && s.items.length >= 5) resolve(true);
        else if (Date.now() > deadline) resolve(false);
        else setTimeout(check, 10);
      };
      check();
    });
    const got = await take(s, 300);
    const result = {
      paused,
      data: got.map((m) => m.data),
      idsMatch: got.map((m) => m.id).join() === sent.join(),
      connections: reader.connections,
      resumes: s.resumes,
    };
    await Promise.all([reader.close(), pub.close()]);
    return result;
  },

  // The eu edge is stopped (SIGSTOP) at the progress mark: a publish and a history time
  // out; after SIGCONT (the next line on stdin) the same connection publishes.
  async timeouts() {
    const c = new EdgemeshClient({
      token: cfg.token,
      regions: regions("eu"),
      settings: { ...FAST, publishTimeoutMs: 1000, requestTimeoutMs: 1000, pingIntervalMs: 30000, pingTimeoutMs: 30000 },
    });
    await c.connect();
    await progress({ connected: true });
    const t0 = Date.now();
    let publishCode = null;
    let messageId = null;
    try {
      await c.publish("js:stopped", 1, { messageId: "late-1" });
    } catch (err) {
      publishCode = err.code;
      messageId = err.messageId;
    }
    const took = Date.now() - t0;
    const historyCode = await codeOf(c.history("js:stopped"));
    await progress({ timedOut: true });
    const ack = await c.publish("js:stopped", 2);
    const result = { publishCode, messageId, took, historyCode, serial: ack.serial, connections: c.connections };
    await c.close();
    return result;
  },

  // Routed by the control planes (cfg.routeUrls): the test drains the first region at the
  // first progress mark and restores it at the second; the client leaves and comes back.
  async route() {
    const settings = { ...FAST, routeRefreshMs: 1000 };
    const subC = new EdgemeshClient({ token: cfg.token, routeUrls: cfg.routeUrls, settings });
    const pub = new EdgemeshClient({ token: cfg.token, regions: regions("ap"), settings: FAST });
    await Promise.all([subC.connect(), pub.connect()]);
    const s = await subC.subscribe("js:route");
    const seen = [subC.connection.region];
    const sent = [];
    const publishUntil = async (region, atLeast) => {
      const deadline = Date.now() + 30000;
      let after = 0;
      while (after < atLeast) {
        if (Date.now() > deadline) throw new Error(`not in ${region} within 30 s`);
        sent.push((await pub.publish("js:route", sent.length)).messageId);
        if (subC.connection && subC.connection.region === region) after += 1;
        await new Promise((r) => setTimeout(r, 20));
      }
      seen.push(region);
    };
    await progress({ region: seen[0] }); // the test drains it
    await publishUntil(cfg.fallback, 20);
    await progress({ region: cfg.fallback }); // the test restores the first region
    await publishUntil(seen[0], 10);
    const got = await take(s, sent.length);
    const result = {
      regions: seen,
      idsMatch: got.map((m) => m.id).join() === sent.join(),
      resumes: s.resumes,
      discontinuities: s.discontinuities,
    };
    await Promise.all([subC.close(), pub.close()]);
    return result;
  },

  // No edge listening, then a token that is refused.
  async refused() {
    const nobody = new EdgemeshClient({
      token: "t",
      urls: [cfg.deadUrl],
      settings: { connectTimeoutMs: 500, reconnectBaseMs: 50 },
    });
    const unreachable = await codeOf(nobody.connect());
    const bad = new EdgemeshClient({ token: cfg.expiredToken, regions: regions("eu"), settings: FAST });
    const refused = await codeOf(bad.connect());
    const afterwards = await codeOf(bad.publish("x", 1));
    return { unreachable, nobodyState: nobody.state, refused, badState: bad.state, afterwards };
  },
};

try {
  say({ event: "result", ...(await scenarios[name]()) });
  process.exit(0);
} catch (err) {
  say({ event: "failed", error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}
