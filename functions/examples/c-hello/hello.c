/* hello.c: example Squall function in C99; greets the name given as input, as plain text.
 *
 * Input: the name as raw bytes (empty input greets "world"). Output: "Hello from C, <name>!".
 * It keeps no shared state, so concurrent calls from several threads are safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "squall.h"

static const char PREFIX[] = "Hello from C, ";
static const char SUFFIX[] = "!";
static const char DEFAULT_NAME[] = "world";
static const char OUT_OF_MEMORY[] = "c-hello: out of memory";

const uint32_t squall_abi_version = SQUALL_ABI_VERSION;

int32_t squall_init(const squall_host *host) {
  (void)host;
  return 0;
}

int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  const uint8_t *name = input.ptr;
  size_t name_len = input.len;
  size_t prefix_len = sizeof PREFIX - 1;
  size_t suffix_len = sizeof SUFFIX - 1;
  size_t len;
  uint8_t *text;
  char line[128];

  if (name == NULL || name_len == 0) {
    name = (const uint8_t *)DEFAULT_NAME;
    name_len = sizeof DEFAULT_NAME - 1;
  }

  out->retry_after_ms = 0;
  len = prefix_len + name_len + suffix_len;
  text = malloc(len);
  if (text == NULL) {
    /* A static message with cap 0: squall_free knows not to free it. */
    out->body.ptr = (uint8_t *)OUT_OF_MEMORY;
    out->body.len = sizeof OUT_OF_MEMORY - 1;
    out->body.cap = 0;
    return SQUALL_RETRY;
  }
  memcpy(text, PREFIX, prefix_len);
  memcpy(text + prefix_len, name, name_len);
  memcpy(text + prefix_len + name_len, SUFFIX, suffix_len);

  /* The name is not NUL-terminated: print at most a bounded prefix of it. */
  snprintf(line, sizeof line, "c-hello: greeting %.*s", (int)(name_len > 64 ? 64 : name_len),
           (const char *)name);
  squall_log(ctx, SQUALL_LOG_INFO, line);

  out->body.ptr = text;
  out->body.len = len;
  out->body.cap = len;
  return SQUALL_OK;
}

void squall_free(squall_buf buf) {
  if (buf.ptr != NULL && buf.cap != 0) {
    free(buf.ptr);
  }
}
