// Example function: greets a name with the greeting word from the function's config and counts
// how often each name was greeted, in the function's own state.

// Names are bounded so that their state key stays well under the 256 bytes a key may have.
export const MAX_NAME_BYTES = 64;

const encoder = new TextEncoder();
const isPlain = (byte) =>
  (byte >= 0x30 && byte <= 0x39) || // 0-9
  (byte >= 0x41 && byte <= 0x5a) || // A-Z
  (byte >= 0x61 && byte <= 0x7a) || // a-z
  byte === 0x5f || byte === 0x2e || byte === 0x2d; // _ . -

// The state key of `name`'s counter: `visits/` and the name's UTF-8 bytes, each byte that is
// not a letter, digit, `_`, `.` or `-` written as `=XX` (so "Zoë Ng" is `visits/Zo=C3=AB=20Ng`):
// readable, and never two names on one key.
export function visitsKey(name) {
  let escaped = "";
  for (const byte of encoder.encode(name)) {
    escaped += isPlain(byte)
      ? String.fromCharCode(byte)
      : "=" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return `visits/${escaped}`;
}

// `{"name": "Ada"}` (the name, or the whole input, may be left out) → `{"greeting": "Hello,
// Ada!", "visits": 3}`: the greeting word is the config's `greeting`, and `visits` counts this
// name's greetings so far, this one included.
export function handler(event, context) {
  let name = event !== null && typeof event === "object" ? event.name : undefined;
  name = typeof name === "string" && name.trim() !== "" ? name.trim() : "world";
  if (encoder.encode(name).length > MAX_NAME_BYTES) {
    throw new RangeError(`a name is at most ${MAX_NAME_BYTES} bytes of UTF-8`);
  }
  const word = context.config.greeting || "Hello";
  // Read, add one, write: two calls for one name at the same instant can both read the same
  // count (a worker runs one call at a time, but a fleet has several workers).
  const key = visitsKey(name);
  const visits = Number(context.kv.getText(key) ?? "0") + 1;
  context.kv.put(key, String(visits));
  context.log.info(`hello: greeting ${name} (visit ${visits})`);
  return { greeting: `${word}, ${name}!`, visits };
}
