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
 *
 * The size rule
 *   `squall_host` and `squall_ctx` start with `size`, the struct's size as the host built it.
 *   Later hosts append fields without a new ABI version, and older hosts may lack fields this
 *   header has: read a field only when `size` covers it (see SQUALL_HAS_FIELD below).
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

typedef struct squall_host {
  uint32_t size;                /* sizeof(squall_host) as the host built it */
  void *data;
  /* level: 1 error, 2 warn, 3 info, 4 debug, 5 trace */
  void (*log)(void *data, uint32_t level, squall_bytes message);
} squall_host;

typedef struct {
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

#ifdef __cplusplus
}
#endif

#endif /* SQUALL_H */
