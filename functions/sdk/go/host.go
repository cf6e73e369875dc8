// host.go: the host behind a Context: the worker's callbacks through squall.h, or an in-memory one for tests.
package squall

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#include <stdlib.h>
#include "squall.h"

static squall_bytes go_bytes(const void *ptr, size_t len) {
  squall_bytes bytes;
  bytes.ptr = (const uint8_t *)ptr;
  bytes.len = len;
  return bytes;
}

static void go_log(const squall_ctx *ctx, uint32_t level, const void *msg, size_t len) {
  squall_log_bytes(ctx, level, go_bytes(msg, len));
}

static void go_host_log(const squall_host *host, uint32_t level, const void *msg, size_t len) {
  squall_host_log_bytes(host, level, go_bytes(msg, len));
}

static int32_t go_kv_get(const squall_ctx *ctx, const void *key, size_t key_len, squall_buf *value) {
  return squall_kv_get(ctx, go_bytes(key, key_len), value);
}

static int32_t go_kv_put(const squall_ctx *ctx, const void *key, size_t key_len,
                         const void *value, size_t value_len, uint64_t ttl_ms) {
  return squall_kv_put(ctx, go_bytes(key, key_len), go_bytes(value, value_len), ttl_ms);
}

static int32_t go_kv_delete(const squall_ctx *ctx, const void *key, size_t key_len) {
  return squall_kv_delete(ctx, go_bytes(key, key_len));
}

static int32_t go_publish(const squall_ctx *ctx, const void *subject, size_t subject_len,
                          const void *payload, size_t payload_len) {
  return squall_publish(ctx, go_bytes(subject, subject_len), go_bytes(payload, payload_len));
}

static int32_t go_cancelled(const squall_ctx *ctx) { return squall_cancelled(ctx); }

static int32_t go_stream_write(const squall_ctx *ctx, const void *chunk, size_t len) {
  return squall_stream_write(ctx, chunk, len);
}

static const squall_ctx *go_nil_ctx(void) { return NULL; }
*/
import "C"

import (
	"time"
	"unsafe"
)

// host is what a Context reads and calls: the worker's, or a test's.
type host interface {
	function() string
	invocationID() string
	traceparent() string
	config() []byte
	event() []byte
	attempt() int
	deadline() time.Time
	log(level Level, message string)
	kvGet(key string) ([]byte, int32)
	kvPut(key string, value []byte, ttlMs uint64) int32
	kvDelete(key string) int32
	publish(subject string, payload []byte) int32
	cancelled() int32
	streamWrite(chunk []byte) int32
	end()
}

// cHost is the worker's host for one call: the squall_ctx it lent, valid until the call returns.
type cHost struct {
	ctx *C.squall_ctx
}

func goString(b C.squall_bytes) string {
	if b.len == 0 {
		return ""
	}
	return C.GoStringN((*C.char)(unsafe.Pointer(b.ptr)), C.int(b.len))
}

func goBytes(b C.squall_bytes) []byte {
	if b.len == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(b.ptr), C.int(b.len))
}

// ptr gives C the address of a Go string or slice's bytes (nil when empty). C reads them
// during the call only and they hold no Go pointers, as cgo's rules ask.
func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

// current is the call's ctx, or NULL once the call returned (host calls then answer INVALID).
func (h *cHost) current() *C.squall_ctx {
	if h.ctx == nil {
		return C.go_nil_ctx()
	}
	return h.ctx
}

func (h *cHost) function() string {
	if h.ctx == nil {
		return ""
	}
	return goString(h.ctx.function)
}

func (h *cHost) invocationID() string {
	if h.ctx == nil {
		return ""
	}
	return goString(h.ctx.invocation_id)
}

func (h *cHost) traceparent() string {
	if h.ctx == nil {
		return ""
	}
	return goString(h.ctx.traceparent)
}

func (h *cHost) config() []byte {
	if h.ctx == nil {
		return nil
	}
	return goBytes(h.ctx.config)
}

func (h *cHost) event() []byte {
	if h.ctx == nil {
		return nil
	}
	return goBytes(h.ctx.event)
}

func (h *cHost) attempt() int {
	if h.ctx == nil {
		return 0
	}
	return int(h.ctx.attempt)
}

func (h *cHost) deadline() time.Time {
	if h.ctx == nil {
		return time.Time{}
	}
	return time.UnixMilli(int64(h.ctx.deadline_unix_ms))
}

func (h *cHost) log(level Level, message string) {
	if h.ctx == nil {
		return
	}
	C.go_log(h.ctx, C.uint32_t(level), strPtr(message), C.size_t(len(message)))
}

func (h *cHost) kvGet(key string) ([]byte, int32) {
	var value C.squall_buf
	status := int32(C.go_kv_get(h.current(), strPtr(key), C.size_t(len(key)), &value))
	if status != 0 {
		return nil, status
	}
	bytes := C.GoBytes(unsafe.Pointer(value.ptr), C.int(value.len))
	C.squall_buf_free(h.current(), value)
	return bytes, 0
}

func (h *cHost) kvPut(key string, value []byte, ttlMs uint64) int32 {
	return int32(C.go_kv_put(h.current(), strPtr(key), C.size_t(len(key)), ptr(value),
		C.size_t(len(value)), C.uint64_t(ttlMs)))
}

func (h *cHost) kvDelete(key string) int32 {
	return int32(C.go_kv_delete(h.current(), strPtr(key), C.size_t(len(key))))
}

func (h *cHost) publish(subject string, payload []byte) int32 {
	return int32(C.go_publish(h.current(), strPtr(subject), C.size_t(len(subject)), ptr(payload),
		C.size_t(len(payload))))
}

func (h *cHost) cancelled() int32 {
	if h.ctx == nil {
		return int32(C.SQUALL_HOST_INVALID)
	}
	return int32(C.go_cancelled(h.ctx))
}

func (h *cHost) streamWrite(chunk []byte) int32 {
	return int32(C.go_stream_write(h.current(), ptr(chunk), C.size_t(len(chunk))))
}

func (h *cHost) end() { h.ctx = nil }

// logHost writes to the host's log during squall_init, when no call runs.
func logHost(host *C.squall_host, level Level, message string) {
	C.go_host_log(host, C.uint32_t(level), strPtr(message), C.size_t(len(message)))
}

// Host-call statuses, as squall.h numbers them.
const (
	hostNotFound    = int32(C.SQUALL_HOST_NOT_FOUND)
	hostUnavailable = int32(C.SQUALL_HOST_UNAVAILABLE)
	hostDenied      = int32(C.SQUALL_HOST_DENIED)
	hostTooLarge    = int32(C.SQUALL_HOST_TOO_LARGE)
	hostInvalid     = int32(C.SQUALL_HOST_INVALID)
)
