// export.go: the Go entry points behind abi.c: one registered handler, called with a Context, panics recovered.
package squall

/*
#cgo CFLAGS: -I${SRCDIR}/../include
#include <stdlib.h>
#include "squall.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/debug"
	"unsafe"
)

// handlerFunc is what every Handle* variant registers: the raw call.
type handlerFunc func(ctx *Context, input []byte) ([]byte, error)

var registered handlerFunc

// Handle registers the function's handler. Call it once, from an `init` function of package
// main (a library's `main` never runs):
//
//	func init() { squall.Handle(hello) }
//	func main()  {}
//
// The handler gets the invocation's input (a copy it may keep) and returns the output. A nil
// error is success; Retry(...) asks for another attempt; any other error fails the
// invocation with its message; a panic (a nil dereference included) fails it as a panic, with
// the stack in the invocation's logs.
func Handle(handler func(ctx *Context, input []byte) ([]byte, error)) {
	if registered != nil {
		panic("squall.Handle called twice: a library serves one function")
	}
	registered = handler
}

//export squallGoInit
func squallGoInit(host *C.squall_host) C.int32_t {
	if registered == nil {
		logHost(host, LevelError, "no handler: call squall.Handle (or HandleJSON, HandleWeb) from an init function of package main")
		return 1
	}
	return 0
}

//export squallGoInvoke
func squallGoInvoke(raw *C.squall_ctx, input C.squall_bytes, out *C.squall_output) (status C.int32_t) {
	ctx := &Context{host: &cHost{ctx: raw}}
	defer ctx.end()
	out.retry_after_ms = 0
	defer func() {
		if r := recover(); r != nil {
			ctx.Log(LevelError, fmt.Sprintf("panic: %v\n%s", r, debug.Stack()))
			setBody(out, []byte(fmt.Sprintf("panic: %v", r)))
			status = C.SQUALL_PANIC
		}
	}()
	if registered == nil {
		setBody(out, []byte("no handler: call squall.Handle from an init function of package main"))
		return C.SQUALL_ERROR
	}
	output, err := registered(ctx, C.GoBytes(unsafe.Pointer(input.ptr), C.int(input.len)))
	code, body, after := outcome(output, err)
	setBody(out, body)
	out.retry_after_ms = C.uint64_t(after)
	return C.int32_t(code)
}

// outcome maps a handler's answer to an ABI status, the body to hand back and a retry delay.
func outcome(output []byte, err error) (int32, []byte, uint64) {
	if err == nil {
		return C.SQUALL_OK, output, 0
	}
	var retry *RetryError
	if errors.As(err, &retry) {
		return C.SQUALL_RETRY, []byte(retry.Error()), uint64(retry.After.Milliseconds())
	}
	var host *HostError
	if errors.As(err, &host) && host.Retryable() {
		// An unavailable store, left uncaught, asks for another attempt.
		return C.SQUALL_RETRY, []byte(err.Error()), 0
	}
	return C.SQUALL_ERROR, []byte(err.Error()), 0
}

// setBody hands bytes to the host in memory of C's allocator; squall_free (abi.c) frees it.
func setBody(out *C.squall_output, body []byte) {
	out.body.ptr, out.body.len, out.body.cap = nil, 0, 0
	if len(body) == 0 {
		return
	}
	ptr := C.malloc(C.size_t(len(body)))
	if ptr == nil {
		return
	}
	copy(unsafe.Slice((*byte)(ptr), len(body)), body)
	out.body.ptr = (*C.uint8_t)(ptr)
	out.body.len = C.size_t(len(body))
	out.body.cap = C.size_t(len(body))
}
