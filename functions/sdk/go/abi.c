// abi.c: the C half of Squall's Go SDK: ABI v1's data symbol and entry points, which forward to the Go half.
//
// `squall_abi_version` is data, which a Go `//export` cannot define, and the entry points keep
// the exact prototypes of squall.h (cgo would declare its own, without `const`).
#include <stdlib.h>
#include "squall.h"
#include "_cgo_export.h"

const uint32_t squall_abi_version = SQUALL_ABI_VERSION;

int32_t squall_init(const squall_host *host) {
  return squallGoInit((squall_host *)host);
}

int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  return squallGoInvoke((squall_ctx *)ctx, input, out);
}

void squall_free(squall_buf buf) {
  free(buf.ptr);
}
