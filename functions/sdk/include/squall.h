/* squall.h: the Squall function ABI v1, for authors of functions in C, C++, Zig, Go or any
 * language that can export C symbols.
 *
 * A function is an ELF shared library that exports, with C linkage:
 *
 *   squall_abi_version  data, must equal SQUALL_ABI_VERSION; read from the file before loading
 *   squall_init         optional; runs once per load; non-zero means the load failed
 *   squall_invoke       runs one invocation
 *   squall_free         frees the buffer that squall_invoke put in out->body
 *
 * Ownership
 *   - `ctx`, everything it points to, and `input` are borrowed from the host for the duration of
 *     one call. Copy what you need to keep; never free or write to them. `squall_bytes` are not
 *     NUL-terminated, and `ptr` may be NULL when `len` is 0.
 *   - `squall_invoke` always fills `out->body`: the output on SQUALL_OK, a UTF-8 error message
 *     otherwise. The library allocates it however it likes; the host hands the very same
 *     `squall_buf` back to `squall_free` exactly once, after copying the bytes. `squall_free`
 *     must accept an empty buffer (NULL ptr, len 0, cap 0) as a no-op.
 *   - The host's `log` callback copies the message before returning; pass borrowed bytes.
 *   - A value the host fills (kv_get) belongs to the function until it hands it back to the
 *     host's `buf_free`, exactly once.
 *
 * The size rule
 *   `squall_host` and `squall_ctx` start with `size`, the struct's size as the host built it.
 *   Later hosts append fields without a new ABI version, and older hosts may lack fields this
 *   header has: read a field only when `size` covers it (see SQUALL_HAS_FIELD below).
 *
 * Web functions (a spec with `web`) use this same ABI: `ctx->event` describes the HTTP request
 * and the output is a JSON response envelope (functions/README.md, "Web functions in C").
 *
 * Language: C99 or later, or C++. The conveniences below are `static inline`.
 *
 * Rules
 *   - Never let an exception, a panic or a longjmp leave squall_init or squall_invoke.
 *   - squall_invoke may be called concurrently from several threads: keep shared state read-only
 *     after squall_init, or protect it yourself.
 *   - The host never unloads a library; a new version is loaded from a new file.
 *
 * A whole function, built with `cc -std=c99 -O2 -shared -fPIC -o libecho.so echo.c`:
 *
 *   #include <stdlib.h>
 *   #include <string.h>
 *   #include "squall.h"
 *
 *   const uint32_t squall_abi_version = SQUALL_ABI_VERSION;
 *
 *   int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
 *     uint8_t *copy = malloc(input.len ? input.len : 1);
 *     squall_log(ctx, SQUALL_LOG_INFO, "echo: invoked");
 *     out->retry_after_ms = 0;
 *     if (copy == NULL) {
 *       out->body.ptr = NULL; out->body.len = 0; out->body.cap = 0;
 *       return SQUALL_RETRY;
 *     }
 *     if (input.len) memcpy(copy, input.ptr, input.len);
 *     out->body.ptr = copy; out->body.len = input.len; out->body.cap = input.len;
 *     return SQUALL_OK;
 *   }
 *
 *   void squall_free(squall_buf buf) { free(buf.ptr); }
 */
#ifndef SQUALL_H
#define SQUALL_H

/* ---- The contract (ABI v1). Change only with a new ABI version. ---- */

#include <stdint.h>
#include <stddef.h>
#include <string.h> /* strlen, for the conveniences below */

#ifdef __cplusplus
extern "C" {
#endif

#define SQUALL_ABI_VERSION 1

typedef struct { const uint8_t *ptr; size_t len; } squall_bytes;      /* borrowed for the call */
typedef struct { uint8_t *ptr; size_t len; size_t cap; } squall_buf;   /* owned by the library */

struct squall_ctx;
typedef struct squall_host {
  uint32_t size;                /* sizeof(squall_host) as the host built it */
  void *data;
  /* level: 1 error, 2 warn, 3 info, 4 debug, 5 trace */
  void (*log)(void *data, uint32_t level, squall_bytes message);
  /* ---- appended: state and events, scoped to the function of `ctx` ---- */
  /* 0 found (*value filled by the host; give it back with buf_free), 1 no such key, < 0 error */
  int32_t (*kv_get)(const struct squall_ctx *ctx, squall_bytes key, squall_buf *value);
  /* ttl_ms 0 = keep; 0 stored, < 0 error */
  int32_t (*kv_put)(const struct squall_ctx *ctx, squall_bytes key, squall_bytes value, uint64_t ttl_ms);
  /* 0 deleted or absent, < 0 error */
  int32_t (*kv_delete)(const struct squall_ctx *ctx, squall_bytes key);
  /* publish `payload` on `subject`, which must start with "events."; 0 accepted, < 0 error */
  int32_t (*publish)(const struct squall_ctx *ctx, squall_bytes subject, squall_bytes payload);
  void (*buf_free)(squall_buf buf);
  /* ---- appended: cooperative cancellation ---- */
  /* 1 the invocation was cancelled (stop early: whatever it returns, it ends `cancelled`),
   * 0 not cancelled, < 0 error */
  int32_t (*cancelled)(const struct squall_ctx *ctx);
  /* ---- appended: streamed responses ---- */
  /* writes one chunk of the output now; 0 sent, < 0 error (SQUALL_HOST_INVALID outside the
     invocation, SQUALL_HOST_TOO_LARGE past the output limit). Once a function has streamed,
     the body it returns from squall_invoke is appended as the last chunk. */
  int32_t (*stream_write)(const struct squall_ctx *ctx, squall_bytes chunk);
} squall_host;

#define SQUALL_HOST_NOT_FOUND 1
#define SQUALL_HOST_UNAVAILABLE (-1)  /* the broker did not answer in time: retryable */
#define SQUALL_HOST_DENIED (-2)       /* key or subject not allowed */
#define SQUALL_HOST_TOO_LARGE (-3)    /* key over 256 bytes, value or payload over the limit */
#define SQUALL_HOST_INVALID (-4)      /* malformed key or subject, or the call came from outside an invocation */

typedef struct squall_ctx {
  uint32_t size;                /* sizeof(squall_ctx) as the host built it */
  squall_bytes function;        /* function name */
  squall_bytes invocation_id;
  squall_bytes traceparent;     /* W3C traceparent; may be empty */
  squall_bytes config;          /* the function's config values, a JSON object */
  squall_bytes event;           /* what triggered it, a JSON object: {"source": "http|nats|cron|kv",
                                   "subject", "headers", "schedule", "key", "op", …} as applicable */
  uint32_t attempt;             /* 1-based */
  uint64_t deadline_unix_ms;
  const squall_host *host;
} squall_ctx;

enum { SQUALL_OK = 0, SQUALL_ERROR = 1, SQUALL_RETRY = 2, SQUALL_PANIC = 3 };

typedef struct {
  squall_buf body;              /* output on SQUALL_OK; a UTF-8 error message otherwise */
  uint64_t retry_after_ms;      /* with SQUALL_RETRY: suggested delay, 0 = policy default */
} squall_output;

extern const uint32_t squall_abi_version;                  /* data, = SQUALL_ABI_VERSION */
int32_t squall_init(const squall_host *host);              /* optional; non-zero = init failed */
int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out);
void    squall_free(squall_buf buf);                       /* frees what squall_invoke returned */

/* ---- Conveniences (not part of the binary contract). ---- */

/* Log levels for squall_host.log. */
#define SQUALL_LOG_ERROR 1
#define SQUALL_LOG_WARN 2
#define SQUALL_LOG_INFO 3
#define SQUALL_LOG_DEBUG 4
#define SQUALL_LOG_TRACE 5

/* Non-zero when the struct at `ptr` (a squall_host * or squall_ctx *, not NULL), whose type is
 * `type`, is large enough to hold `field`: the size rule as an expression. */
#define SQUALL_HAS_FIELD(type, ptr, field) \
  ((size_t)(ptr)->size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* Sends `message` to the host's log; does nothing when the host, or its log callback, is
 * missing. Usable from squall_init. */
static inline void squall_host_log_bytes(const squall_host *host, uint32_t level,
                                         squall_bytes message) {
  if (host != NULL && SQUALL_HAS_FIELD(squall_host, host, log) && host->log != NULL) {
    host->log(host->data, level, message);
  }
}

/* Like squall_host_log_bytes, with a NUL-terminated message. */
static inline void squall_host_log(const squall_host *host, uint32_t level, const char *message) {
  squall_bytes bytes;
  bytes.ptr = (const uint8_t *)message;
  bytes.len = message != NULL ? strlen(message) : 0;
  squall_host_log_bytes(host, level, bytes);
}

/* The host of an invocation, or NULL when the ctx has none (or is too old to carry one). */
static inline const squall_host *squall_ctx_host(const squall_ctx *ctx) {
  if (ctx == NULL || !SQUALL_HAS_FIELD(squall_ctx, ctx, host)) {
    return NULL;
  }
  return ctx->host;
}

/* Logs through the invocation's host, if it has one. */
static inline void squall_log_bytes(const squall_ctx *ctx, uint32_t level, squall_bytes message) {
  squall_host_log_bytes(squall_ctx_host(ctx), level, message);
}

/* Logs a NUL-terminated message through the invocation's host, if it has one. */
static inline void squall_log(const squall_ctx *ctx, uint32_t level, const char *message) {
  squall_host_log(squall_ctx_host(ctx), level, message);
}

/* ---- Host services: state and events (conveniences; the contract is the fields above). ----
 *
 * Each returns SQUALL_HOST_INVALID when the host is too old to offer the services (its `size`
 * does not cover `buf_free`) or lacks the callback. Call them only during squall_invoke, from
 * the thread that runs it, with its ctx. Keys are 1 to 256 bytes of [A-Za-z0-9_=./-], not
 * starting or ending with '.'; each function sees only its own keys. Values are at most 1 MiB.
 */

/* The invocation's host when it offers the host services, else NULL. */
static inline const squall_host *squall_services(const squall_ctx *ctx) {
  const squall_host *host = squall_ctx_host(ctx);
  if (host == NULL || !SQUALL_HAS_FIELD(squall_host, host, buf_free)) {
    return NULL;
  }
  return host;
}

/* Makes borrowed bytes of a NUL-terminated string (NULL gives empty bytes). */
static inline squall_bytes squall_str(const char *s) {
  squall_bytes bytes;
  bytes.ptr = (const uint8_t *)s;
  bytes.len = s != NULL ? strlen(s) : 0;
  return bytes;
}

/* Reads `key`: 0 and *value filled (free it with squall_buf_free), SQUALL_HOST_NOT_FOUND, or
 * an error below zero. *value is emptied first, so freeing it is always safe. */
static inline int32_t squall_kv_get(const squall_ctx *ctx, squall_bytes key, squall_buf *value) {
  const squall_host *host = squall_services(ctx);
  if (value != NULL) {
    value->ptr = NULL; value->len = 0; value->cap = 0;
  }
  if (host == NULL || host->kv_get == NULL || value == NULL) {
    return SQUALL_HOST_INVALID;
  }
  return host->kv_get(ctx, key, value);
}

/* Writes `key`; ttl_ms 0 keeps it until it is deleted. */
static inline int32_t squall_kv_put(const squall_ctx *ctx, squall_bytes key, squall_bytes value,
                                    uint64_t ttl_ms) {
  const squall_host *host = squall_services(ctx);
  if (host == NULL || host->kv_put == NULL) {
    return SQUALL_HOST_INVALID;
  }
  return host->kv_put(ctx, key, value, ttl_ms);
}

/* Deletes `key`; deleting an absent key succeeds. */
static inline int32_t squall_kv_delete(const squall_ctx *ctx, squall_bytes key) {
  const squall_host *host = squall_services(ctx);
  if (host == NULL || host->kv_delete == NULL) {
    return SQUALL_HOST_INVALID;
  }
  return host->kv_delete(ctx, key);
}

/* Publishes `payload` on `subject` (under "events."). */
static inline int32_t squall_publish(const squall_ctx *ctx, squall_bytes subject,
                                     squall_bytes payload) {
  const squall_host *host = squall_services(ctx);
  if (host == NULL || host->publish == NULL) {
    return SQUALL_HOST_INVALID;
  }
  return host->publish(ctx, subject, payload);
}

/* Gives back a value squall_kv_get filled; an empty buffer is a no-op. */
static inline void squall_buf_free(const squall_ctx *ctx, squall_buf buf) {
  const squall_host *host = squall_services(ctx);
  if (buf.ptr != NULL && host != NULL && host->buf_free != NULL) {
    host->buf_free(buf);
  }
}

/* ---- Cooperative cancellation (a convenience; the contract is the field above). ---- */

/* 1 when the invocation was cancelled (DELETE /v1/invocations/{id}), so a long-running
 * function may stop early; 0 when it was not, or the host is too old to tell (its `size` does
 * not cover `cancelled`); below zero on an error (SQUALL_HOST_INVALID outside the invocation).
 * Costs a lookup in the worker's memory: cheap enough to call in a loop. */
static inline int32_t squall_cancelled(const squall_ctx *ctx) {
  const squall_host *host = squall_ctx_host(ctx);
  if (host == NULL || !SQUALL_HAS_FIELD(squall_host, host, cancelled) || host->cancelled == NULL) {
    return 0;
  }
  return host->cancelled(ctx);
}

/* ---- Streamed responses (a convenience; the contract is the field above). ---- */

/* Writes `len` bytes at `chunk` as the next chunk of the output: a caller that asked for a
 * stream receives it now. Once a function has streamed, the body squall_invoke returns is the
 * last chunk (return an empty body to add nothing), and a streamed invocation is not retried.
 * 0 sent; SQUALL_HOST_INVALID when the host is too old to stream (its `size` does not cover
 * `stream_write`) or the call came from outside the invocation; SQUALL_HOST_TOO_LARGE past the
 * output limit; SQUALL_HOST_UNAVAILABLE when the chunk could not be stored. */
static inline int32_t squall_stream_write(const squall_ctx *ctx, const void *chunk, size_t len) {
  const squall_host *host = squall_ctx_host(ctx);
  if (host == NULL || !SQUALL_HAS_FIELD(squall_host, host, stream_write) || host->stream_write == NULL) {
    return SQUALL_HOST_INVALID;
  }
  squall_bytes bytes = {(const uint8_t *)chunk, len};
  return host->stream_write(ctx, bytes);
}

#ifdef __cplusplus
}
#endif

#endif /* SQUALL_H */
