// Unit tests of the bot: `squall test functions/examples/js-chatbot` calls every exported
// function whose name starts with `test`.
import { MAX_SKEW_S, Verdict, converse, handler, slackSignature, verify } from "./app.mjs";

const { assert, assertEqual, context } = squall.testing;
const SECRET = "s3";
const encoder = new TextEncoder();
const nowS = () => Math.floor(Date.now() / 1000);

export function testASignatureIsValidOnlyWhenItMatchesAndIsRecent() {
  const body = encoder.encode('{"type":"url_verification","challenge":"c"}');
  const signed = slackSignature(SECRET, "1000", body);
  const check = (signature, timestamp, now) => verify(SECRET, timestamp, signature, body, now);
  assertEqual(check(signed, "1000", 1000), Verdict.VALID);
  assertEqual(check(signed, "1000", 1000 + MAX_SKEW_S), Verdict.VALID);
  assertEqual(check(signed, "1000", 1001 + MAX_SKEW_S), Verdict.STALE);
  // A clock behind Slack's by up to five minutes is fine; further is not.
  assertEqual(check(signed, "1000", 1000 - MAX_SKEW_S), Verdict.VALID);
  assertEqual(check(signed, "1000", 999 - MAX_SKEW_S), Verdict.STALE);
  // The timestamp is part of what is signed: moving it breaks the signature.
  assertEqual(check(signed, "1001", 1000), Verdict.BAD_SIGNATURE);
  assertEqual(check("v0=00", "1000", 1000), Verdict.BAD_SIGNATURE);
  assertEqual(check(undefined, "1000", 1000), Verdict.BAD_SIGNATURE);
  assertEqual(check(signed, undefined, 1000), Verdict.BAD_SIGNATURE);
  assertEqual(verify("other", "1000", signed, body, 1000), Verdict.BAD_SIGNATURE);
  // A signed timestamp that is not a number is no better than a bad signature.
  const odd = slackSignature(SECRET, "soon", body);
  assertEqual(verify(SECRET, "soon", odd, body, 1000), Verdict.BAD_SIGNATURE);
}

export function testTheBotRemembersANameAndCountsTurns() {
  let [memory, reply] = converse({ name: null, turns: 0 }, "hi");
  assert(reply.includes("Hello there! That is message 1"), reply);
  [memory, reply] = converse(memory, "My name is Ada Lovelace.");
  assertEqual(reply, "Nice to meet you, Ada Lovelace!");
  [memory, reply] = converse(memory, "What's my name?");
  assertEqual(reply, "You are Ada Lovelace.");
  assertEqual(memory, { name: "Ada Lovelace", turns: 3 });
  [memory, reply] = converse(memory, "Forget me");
  assert(memory === null && reply.includes("forgotten"), reply);
  [, reply] = converse({ name: null, turns: 0 }, "what is my name");
  assert(reply.includes("not told me"), reply);
  [memory] = converse({ name: null, turns: 0 }, `my name is ${"🙂".repeat(50)}!!`);
  assertEqual(Array.from(memory.name).length, 40, "a name is cut to 40 characters");
}

// A web event as the runtime gives it, signed as Slack signs.
function request(body, { secret = SECRET, timestamp = String(nowS()), method = "POST" } = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const headers = {
    "content-type": "application/json",
    "x-slack-request-timestamp": timestamp,
    "x-slack-signature": slackSignature(secret, timestamp, encoder.encode(text)),
  };
  return {
    source: "web", method, path: "/", rawQuery: "", query: {}, headers, remoteAddr: "",
    body: text, isBase64Encoded: false,
  };
}

const configured = () =>
  context({ config: { memory_ttl_s: 600 }, secrets: { SLACK_SIGNING_SECRET: SECRET } });

const message = (eventId, user, text) => ({
  type: "event_callback",
  team_id: "T1",
  event_id: eventId,
  event: { type: "message", channel: "D1", user, text },
});

const bodyOf = (answer) => JSON.parse(answer.body);

export function testTheChallengeIsAnsweredOnlyWhenSigned() {
  const ctx = configured();
  const challenge = { type: "url_verification", challenge: "abc123" };
  const answer = handler(request(challenge), ctx);
  assertEqual([answer.statusCode, answer.body], [200, "abc123"]);
  const forged = handler(request(challenge, { secret: "x" }), ctx);
  assertEqual([forged.statusCode, bodyOf(forged)], [401, { error: "bad signature" }]);
  const stale = handler(request(challenge, { timestamp: String(nowS() - 600) }), ctx);
  assertEqual([stale.statusCode, bodyOf(stale)], [403, { error: "stale timestamp" }]);
  const get = handler({ ...request(""), method: "GET" }, ctx);
  assertEqual([get.statusCode, get.headers.allow], [405, "POST"]);
  const unconfigured = handler(request(challenge), context());
  assertEqual(unconfigured.statusCode, 500);
}

export function testBodiesThatAreNotEventsAreRefused() {
  const ctx = configured();
  assertEqual(handler(request("not json"), ctx).statusCode, 400);
  const other = bodyOf(handler(request({ type: "other" }), ctx));
  assertEqual(other, { error: "not an Events API payload" });
  const noUser = message("Ev1", undefined, "hi");
  assertEqual(handler(request(noUser), ctx).statusCode, 400);
  const badTeam = { ...message("Ev1", "U1", "hi"), team_id: "T1/../x" };
  assertEqual(handler(request(badTeam), ctx).statusCode, 400);
  assertEqual(ctx.store.size, 0);
}

export function testAConversationIsKeptPerUserWithATtlAndRetriesCountOnce() {
  const ctx = configured();
  const say = (eventId, user, text) => bodyOf(handler(request(message(eventId, user, text)), ctx));
  const first = say("Ev1", "U1", "my name is Ada");
  assertEqual(first, { channel: "D1", text: "Nice to meet you, Ada!", turn: 1 });
  assertEqual(say("Ev2", "U1", "what's my name?").text, "You are Ada.");
  assertEqual(say("Ev2", "U1", "what's my name?"), { ok: true, duplicate: true });
  assertEqual(say("Ev3", "U2", "hi").turn, 1);
  assertEqual(say("Ev4", "U1", "still there?").turn, 3);
  assertEqual(JSON.parse(ctx.kv.getText("user/T1/U1")), { name: "Ada", turns: 3 });
  const ttl = ctx.store.get("user/T1/U1").expires - Date.now();
  assert(ttl > 590000 && ttl <= 600000, `memory_ttl_s is the TTL: ${ttl} ms`);
  assert(say("Ev5", "U1", "forget me").text.includes("forgotten"));
  assertEqual(ctx.kv.get("user/T1/U1"), null);
  assertEqual(say("Ev6", "U1", "hi").turn, 1);
}

export function testTheBotsOwnMessagesAndEditsAreIgnored() {
  const ctx = configured();
  const own = message("Ev1", "U1", "hi");
  own.event = { type: "message", bot_id: "B1", text: "hi" };
  assertEqual(bodyOf(handler(request(own), ctx)), { ok: true, ignored: true });
  const edit = message("Ev2", "U1", "hi");
  edit.event.subtype = "message_changed";
  assertEqual(bodyOf(handler(request(edit), ctx)), { ok: true, ignored: true });
  assertEqual(ctx.store.size, 0);
}
