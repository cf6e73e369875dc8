// The globals every bundle sees, built once per runtime over the native functions in
// `__squall_native` (which this script removes from the global scope). Evaluated as a script;
// its completion value is the object of hooks the Rust side keeps.
(function (native) {
  "use strict";
  const global = globalThis;

  const define = (name, value) =>
    Object.defineProperty(global, name, { value, writable: true, configurable: true, enumerable: false });

  // --- text --------------------------------------------------------------------------------
  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return native.utf8Encode(String(input)); }
    encodeInto(input, dest) {
      const bytes = native.utf8Encode(String(input));
      const n = Math.min(bytes.length, dest.length);
      dest.set(bytes.subarray(0, n));
      return { read: n === bytes.length ? String(input).length : undefined, written: n };
    }
  }
  class TextDecoder {
    #fatal;
    constructor(label = "utf-8", options = {}) {
      const l = String(label).toLowerCase();
      if (l !== "utf-8" && l !== "utf8") throw new RangeError(`TextDecoder supports utf-8 only, not ${label}`);
      this.#fatal = Boolean(options && options.fatal);
    }
    get encoding() { return "utf-8"; }
    get fatal() { return this.#fatal; }
    decode(input) {
      if (input === undefined) return "";
      return native.utf8Decode(toBytes(input), this.#fatal);
    }
  }
  define("TextEncoder", TextEncoder);
  define("TextDecoder", TextDecoder);

  function toBytes(value) {
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    throw new TypeError("expected a Uint8Array, an ArrayBuffer or a typed array");
  }
  function payloadBytes(value) {
    return typeof value === "string" ? native.utf8Encode(value) : toBytes(value);
  }

  // --- base64 ------------------------------------------------------------------------------
  define("btoa", (data) => native.btoa(String(data)));
  define("atob", (data) => native.atob(String(data)));

  // --- crypto ------------------------------------------------------------------------------
  const crypto = {
    getRandomValues(array) {
      if (!ArrayBuffer.isView(array) || array instanceof DataView || array instanceof Float32Array || array instanceof Float64Array)
        throw new TypeError("getRandomValues needs an integer typed array");
      if (array.byteLength > 65536) throw new RangeError("getRandomValues fills at most 65536 bytes");
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(native.randomBytes(array.byteLength));
      return array;
    },
    randomUUID() {
      const b = crypto.getRandomValues(new Uint8Array(16));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  };
  define("crypto", crypto);

  // --- performance -------------------------------------------------------------------------
  const origin = Date.now();
  define("performance", { now: () => Date.now() - origin, timeOrigin: origin });

  // --- timers: driven by the runtime until the handler's promise settles ------------------
  let timers = [];
  let nextTimerId = 1;
  function addTimer(fn, ms, args, repeat) {
    if (typeof fn !== "function") throw new TypeError("a timer needs a function");
    const delay = Math.max(0, Number(ms) || 0);
    const id = nextTimerId++;
    timers.push({ id, at: Date.now() + delay, fn, args, repeat: repeat ? Math.max(1, delay) : 0 });
    return id;
  }
  function removeTimer(id) { timers = timers.filter((t) => t.id !== id); }
  define("setTimeout", (fn, ms, ...args) => addTimer(fn, ms, args, false));
  define("setInterval", (fn, ms, ...args) => addTimer(fn, ms, args, true));
  define("clearTimeout", removeTimer);
  define("clearInterval", removeTimer);
  define("queueMicrotask", (fn) => { Promise.resolve().then(fn); });

  // --- structuredClone ---------------------------------------------------------------------
  function clone(value, seen) {
    if (typeof value !== "object" || value === null) {
      if (typeof value === "function" || typeof value === "symbol")
        throw new TypeError(`${typeof value} values cannot be cloned`);
      return value;
    }
    if (seen.has(value)) return seen.get(value);
    let out;
    if (Array.isArray(value)) {
      out = []; seen.set(value, out);
      value.forEach((v, i) => { out[i] = clone(v, seen); });
    } else if (value instanceof Date) { out = new Date(value.getTime()); seen.set(value, out); }
    else if (value instanceof RegExp) { out = new RegExp(value.source, value.flags); seen.set(value, out); }
    else if (value instanceof ArrayBuffer) { out = value.slice(0); seen.set(value, out); }
    else if (ArrayBuffer.isView(value)) {
      out = new value.constructor(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
      seen.set(value, out);
    } else if (value instanceof Map) {
      out = new Map(); seen.set(value, out);
      for (const [k, v] of value) out.set(clone(k, seen), clone(v, seen));
    } else if (value instanceof Set) {
      out = new Set(); seen.set(value, out);
      for (const v of value) out.add(clone(v, seen));
    } else if (value instanceof Error) {
      out = new Error(value.message); out.name = value.name; seen.set(value, out);
    } else {
      out = {}; seen.set(value, out);
      for (const k of Object.keys(value)) out[k] = clone(value[k], seen);
    }
    return out;
  }
  define("structuredClone", (value) => clone(value, new Map()));

  // --- logging -----------------------------------------------------------------------------
  const LEVELS = { error: 1, warn: 2, info: 3, debug: 4, trace: 5 };
  function show(value) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}` : `${value.name}: ${value.message}`;
    if (typeof value === "object" && value !== null) {
      try { return JSON.stringify(value); } catch { return String(value); }
    }
    return String(value);
  }
  const format = (args) => args.map(show).join(" ");
  function makeLogger(sink) {
    return {
      trace: (...a) => sink(LEVELS.trace, format(a)),
      debug: (...a) => sink(LEVELS.debug, format(a)),
      info: (...a) => sink(LEVELS.info, format(a)),
      warn: (...a) => sink(LEVELS.warn, format(a)),
      error: (...a) => sink(LEVELS.error, format(a)),
    };
  }
  const hostLogger = makeLogger(native.log);
  const consoleObject = { ...hostLogger, log: hostLogger.info };
  define("console", consoleObject);

  // --- host failures -----------------------------------------------------------------------
  const checkKey = (key) => {
    if (typeof key !== "string") throw new TypeError("a key is a string");
    return key;
  };

  // --- the invocation context --------------------------------------------------------------
  const kv = {
    get: (key) => native.kvGet(checkKey(key)),
    getText(key) {
      const bytes = native.kvGet(checkKey(key));
      return bytes === null ? null : native.utf8Decode(bytes, false);
    },
    put: (key, value, ttlMs = 0) => { native.kvPut(checkKey(key), payloadBytes(value), Math.max(0, Number(ttlMs) || 0)); },
    delete: (key) => { native.kvDelete(checkKey(key)); },
  };
  Object.freeze(kv);
  Object.freeze(hostLogger);

  class Context {
    #config;
    #trigger;
    constructor(functionName, invocationId, attempt, deadlineMs) {
      this.functionName = functionName;
      this.invocationId = invocationId;
      this.attempt = attempt;
      this.deadlineMs = deadlineMs;
    }
    get config() {
      if (this.#config === undefined) this.#config = native.config();
      return this.#config;
    }
    // What triggered the invocation: {source: "http" | "nats" | "cron" | "kv" | "web", ...}.
    get trigger() {
      if (this.#trigger === undefined) this.#trigger = native.trigger();
      return this.#trigger;
    }
    get secrets() {
      const s = this.config.secrets;
      return typeof s === "object" && s !== null ? s : {};
    }
    get log() { return hostLogger; }
    get logger() { return hostLogger; }
    get kv() { return kv; }
    getRemainingTimeInMillis() { return Math.max(0, this.deadlineMs - Date.now()); }
    cancelled() { return native.cancelled(); }
    publish(subject, payload) {
      if (typeof subject !== "string") throw new TypeError("a subject is a string");
      native.publish(subject, payloadBytes(payload));
    }
    // Writes one chunk of the output now; what the handler returns follows as the last chunk.
    streamWrite(chunk) { native.streamWrite(payloadBytes(chunk)); }
  }

  // --- squall: Retry and the testing helpers -----------------------------------------------
  class Retry extends Error {
    constructor(afterMs = 0, message) {
      const after = Math.max(0, Number(afterMs) || 0);
      super(message ?? (after > 0 ? `retry after ${after} ms` : "retry"));
      this.name = "Retry";
      this.afterMs = after;
    }
  }

  function canonical(value) {
    if (value instanceof Uint8Array) return { $bytes: Array.from(value) };
    if (value instanceof Map) return { $map: Array.from(value, ([k, v]) => [canonical(k), canonical(v)]) };
    if (value instanceof Set) return { $set: Array.from(value, canonical) };
    if (Array.isArray(value)) return value.map(canonical);
    if (typeof value === "object" && value !== null && !(value instanceof Date)) {
      const out = {};
      for (const k of Object.keys(value).sort()) out[k] = canonical(value[k]);
      return out;
    }
    return value === undefined ? null : value;
  }

  function testContext(options = {}) {
    const config = { ...(options.config ?? {}) };
    if (options.secrets !== undefined) config.secrets = options.secrets;
    const store = new Map();
    const logs = [];
    const published = [];
    const streamed = [];
    const logger = makeLogger((level, message) => {
      logs.push({ level: Object.keys(LEVELS).find((k) => LEVELS[k] === level), message });
      native.log(level, message);
    });
    const live = (key) => {
      const entry = store.get(key);
      if (entry && entry.expires && entry.expires <= Date.now()) { store.delete(key); return undefined; }
      return entry;
    };
    const localKv = {
      get: (key) => { const e = live(checkKey(key)); return e ? e.value.slice() : null; },
      getText: (key) => { const e = live(checkKey(key)); return e ? native.utf8Decode(e.value, false) : null; },
      put: (key, value, ttlMs = 0) => {
        const ttl = Math.max(0, Number(ttlMs) || 0);
        store.set(checkKey(key), { value: payloadBytes(value).slice(), expires: ttl > 0 ? Date.now() + ttl : 0 });
      },
      delete: (key) => { store.delete(checkKey(key)); },
    };
    const deadlineMs = Date.now() + (options.timeoutMs ?? 60000);
    return {
      trigger: options.trigger ?? { source: "test" },
      functionName: options.functionName ?? "test",
      invocationId: options.invocationId ?? crypto.randomUUID(),
      attempt: options.attempt ?? 1,
      deadlineMs,
      config,
      secrets: typeof config.secrets === "object" && config.secrets !== null ? config.secrets : {},
      log: logger,
      logger,
      kv: localKv,
      store,
      logs,
      published,
      streamed,
      getRemainingTimeInMillis: () => Math.max(0, deadlineMs - Date.now()),
      cancelled: () => false,
      publish(subject, payload) {
        if (typeof subject !== "string") throw new TypeError("a subject is a string");
        if (!subject.startsWith("events.")) {
          const e = new Error("not allowed"); e.code = "DENIED"; throw e;
        }
        published.push({ subject, payload: payloadBytes(payload).slice() });
      },
      streamWrite(chunk) { streamed.push(payloadBytes(chunk).slice()); },
    };
  }

  class AssertionError extends Error {
    constructor(message) { super(message); this.name = "AssertionError"; }
  }
  const testing = {
    context: testContext,
    AssertionError,
    assert(condition, message = "assertion failed") {
      if (!condition) throw new AssertionError(message);
    },
    assertEqual(actual, expected, message) {
      const a = JSON.stringify(canonical(actual));
      const e = JSON.stringify(canonical(expected));
      if (a !== e) throw new AssertionError(`${message ? message + ": " : ""}expected ${e}, got ${a}`);
    },
  };
  const squall = Object.freeze({ Retry, testing: Object.freeze(testing) });
  define("squall", squall);

  delete global.__squall_native;

  // --- hooks for the runtime -----------------------------------------------------------------
  return {
    makeContext: (functionName, invocationId, attempt, deadlineMs) =>
      new Context(functionName, invocationId, attempt, deadlineMs),
    // Milliseconds until the next timer is due, or -1 when none is waiting.
    nextTimer() {
      if (timers.length === 0) return -1;
      let at = Infinity;
      for (const t of timers) if (t.at < at) at = t.at;
      return Math.max(0, at - Date.now());
    },
    // Runs the timers that are due; returns the first error a callback threw, or undefined.
    fireTimers() {
      const now = Date.now();
      const due = timers.filter((t) => t.at <= now).sort((a, b) => a.at - b.at || a.id - b.id);
      for (const t of due) {
        if (!timers.includes(t)) continue;
        if (t.repeat) t.at = now + t.repeat; else removeTimer(t.id);
        try { t.fn(...t.args); } catch (error) { return error; }
      }
      return undefined;
    },
    clearTimers() { timers = []; },
    isRetry: (error) => error === Retry || error instanceof Retry,
  };
})(globalThis.__squall_native)
