// Example web function: a Slack Events API webhook in JavaScript that checks Slack's request
// signature, answers the URL-verification challenge and replies to messages with per-user
// memory kept in state.
//
// The reply is the HTTP answer's body (`{"channel", "text", "turn"}`, the arguments a real bot
// would hand to Slack's `chat.postMessage`): functions make no outbound calls here.
import { hmacSha256, sameText, toHex } from "./sha256.mjs";

// Slack's signature header: `v0=<hex HMAC-SHA256(secret, "v0:{timestamp}:{body}")>`.
export const SIGNATURE_HEADER = "x-slack-signature";
// The Unix time (seconds) at which Slack signed the request.
export const TIMESTAMP_HEADER = "x-slack-request-timestamp";
// The function's secret that holds the app's signing secret.
export const SECRET_NAME = "SLACK_SIGNING_SECRET";
// Requests signed further than this from our clock are refused, so a captured request cannot
// be replayed later (Slack's own recommendation is five minutes).
export const MAX_SKEW_S = 5 * 60;
// How long the bot remembers a user after their last message, unless `memory_ttl_s` says.
const DEFAULT_MEMORY_TTL_S = 60 * 60;
// How long an event id is remembered to drop Slack's retries of it (Slack retries for about an
// hour at most; a retry after that is answered again).
const SEEN_TTL_MS = 60 * 60 * 1000;
// The longest name the bot keeps, in characters.
const MAX_NAME_CHARS = 40;

const encoder = new TextEncoder();

// The `X-Slack-Signature` value Slack sends for `body` (bytes) signed at `timestamp`.
export function slackSignature(secret, timestamp, body) {
  const prefix = encoder.encode(`v0:${timestamp}:`);
  const base = new Uint8Array(prefix.length + body.length);
  base.set(prefix);
  base.set(body, prefix.length);
  return `v0=${toHex(hmacSha256(secret, base))}`;
}

// What the signature check concluded.
export const Verdict = Object.freeze({
  // Signed by Slack, recently.
  VALID: "valid",
  // No signature, no timestamp, or a signature that does not match.
  BAD_SIGNATURE: "bad signature",
  // Correctly signed, but at a time too far from ours: a replay, or a clock far off.
  STALE: "stale",
});

// Checks a request's signature and its timestamp against `nowS` (Unix seconds). The signature
// is checked first, so STALE is only ever said of a request Slack really signed.
export function verify(secret, timestamp, signature, body, nowS) {
  if (typeof timestamp !== "string" || typeof signature !== "string") return Verdict.BAD_SIGNATURE;
  if (!sameText(slackSignature(secret, timestamp, body), signature)) return Verdict.BAD_SIGNATURE;
  if (!/^[0-9]{1,15}$/.test(timestamp)) return Verdict.BAD_SIGNATURE;
  return Math.abs(Number(timestamp) - nowS) <= MAX_SKEW_S ? Verdict.VALID : Verdict.STALE;
}

// One turn of the conversation with what the bot remembers of a user (`{name, turns}`): the
// memory after `text` (null: forget the user) and the reply. Pure, so the bot's manners are
// tested without a host.
export function converse(memory, text) {
  text = text.trim();
  const lower = text.toLowerCase();
  memory = { name: memory.name ?? null, turns: memory.turns + 1 };
  if (lower === "forget me") return [null, "Done: I have forgotten everything about you."];
  const NAME_PREFIX = "my name is ";
  let reply;
  if (text.slice(0, NAME_PREFIX.length).toLowerCase() === NAME_PREFIX) {
    const name = Array.from(text.slice(NAME_PREFIX.length).trim().replace(/[.!]+$/, ""))
      .slice(0, MAX_NAME_CHARS)
      .join("");
    memory.name = name;
    reply = `Nice to meet you, ${name}!`;
  } else if (lower.includes("what is my name") || lower.includes("what's my name")) {
    reply =
      memory.name !== null
        ? `You are ${memory.name}.`
        : 'You have not told me your name yet. Say "my name is …".';
  } else {
    const who = memory.name ?? "there";
    reply = `Hello ${who}! That is message ${memory.turns} from you. You said: "${text}"`;
  }
  return [memory, reply];
}

// Slack ids (`T0123`, `U0456`, `Ev0789`) are short runs of letters and digits; anything else is
// refused before it becomes part of a state key.
const slackId = (value) =>
  typeof value === "string" && /^[A-Za-z0-9]{1,64}$/.test(value) ? value : null;

const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

function json(statusCode, value, headers = {}) {
  return {
    statusCode,
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(value),
  };
}

const error = (statusCode, message, headers) => json(statusCode, { error: message }, headers);

// The request body's bytes: the event carries it as text, or base64 when it is not UTF-8.
function bodyBytes(event) {
  const body = typeof event.body === "string" ? event.body : "";
  if (!event.isBase64Encoded) return encoder.encode(body);
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

const nowS = () => Math.floor(Date.now() / 1000);

// Serves Slack's POSTs to the app's Request URL.
export function handler(event, context) {
  if (event.method !== "POST") return error(405, "POST only", { allow: "POST" });
  const secret = context.secrets[SECRET_NAME];
  if (typeof secret !== "string" || secret === "") {
    context.log.error(`chatbot: the secret ${SECRET_NAME} is not set`);
    return error(500, "the bot is not configured");
  }
  const headers = isObject(event.headers) ? event.headers : {};
  const body = bodyBytes(event);
  switch (verify(secret, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body, nowS())) {
    case Verdict.VALID:
      break;
    case Verdict.STALE:
      context.log.warn("chatbot: a signed request with a stale timestamp (a replay?)");
      return error(403, "stale timestamp");
    default:
      context.log.warn("chatbot: a request with a bad signature");
      return error(401, "bad signature");
  }
  let payload;
  try {
    payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return error(400, "the body is not JSON");
  }
  switch (isObject(payload) ? payload.type : undefined) {
    case "url_verification":
      if (typeof payload.challenge !== "string") return error(400, "no challenge");
      return {
        statusCode: 200,
        headers: { "content-type": "text/plain; charset=utf-8" },
        body: payload.challenge,
      };
    case "event_callback":
      return onEvent(context, payload);
    default:
      return error(400, "not an Events API payload");
  }
}

// Answers an `event_callback`: a user's message gets a reply; anything else an acknowledgement.
function onEvent(context, payload) {
  const event = isObject(payload.event) ? payload.event : {};
  // Only plain messages from people: the bot's own messages (`bot_id`) and edits or joins (a
  // `subtype`) would otherwise make it talk to itself.
  if (event.type !== "message" || "bot_id" in event || "subtype" in event) {
    return json(200, { ok: true, ignored: true });
  }
  const team = slackId(typeof payload.team_id === "string" ? payload.team_id : "none");
  const user = slackId(event.user);
  const eventId = slackId(payload.event_id);
  if (team === null || user === null || eventId === null) {
    return error(400, "missing or malformed team_id, event.user or event_id");
  }
  const text = typeof event.text === "string" ? event.text : "";
  const kv = context.kv;
  // Slack retries an event it got no timely 200 for, with the same event id: answer the retry
  // without counting the message twice.
  const seen = `seen/${eventId}`;
  if (kv.get(seen) !== null) return json(200, { ok: true, duplicate: true });
  const key = `user/${team}/${user}`;
  const stored = kv.getText(key);
  const before = stored === null ? { name: null, turns: 0 } : JSON.parse(stored);
  const [memory, reply] = converse(before, text);
  if (memory === null) {
    kv.delete(key);
  } else {
    const ttlS = context.config.memory_ttl_s;
    const ttl = Number.isInteger(ttlS) && ttlS > 0 ? ttlS : DEFAULT_MEMORY_TTL_S;
    kv.put(key, JSON.stringify(memory), ttl * 1000);
  }
  kv.put(seen, "1", SEEN_TTL_MS);
  return json(200, { channel: event.channel ?? null, text: reply, turn: before.turns + 1 });
}
