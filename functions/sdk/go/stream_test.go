// stream_test.go: StreamWrite through the test context, a refusing host and a call that ended.
package squall

import (
	"errors"
	"reflect"
	"testing"
)

func TestStreamWriteRecordsCopiesOfTheChunksInOrder(t *testing.T) {
	ctx := NewTestContext(nil, nil)
	chunk := []byte("one")
	if err := ctx.StreamWrite(chunk); err != nil {
		t.Fatal(err)
	}
	copy(chunk, "ONE")
	if err := ctx.StreamWrite([]byte(" two")); err != nil {
		t.Fatal(err)
	}
	if err := ctx.StreamWrite(nil); err != nil {
		t.Fatal(err)
	}
	want := [][]byte{[]byte("one"), []byte(" two"), nil}
	if !reflect.DeepEqual(ctx.Streamed, want) {
		t.Fatalf("streamed %q, want %q", ctx.Streamed, want)
	}
}

// refusingHost is a test host whose output limit is already reached.
type refusingHost struct{ *testHost }

func (refusingHost) streamWrite([]byte) int32 { return hostTooLarge }

func TestStreamWritePastTheOutputLimitIsATooLargeHostError(t *testing.T) {
	test := NewTestContext(nil, nil)
	ctx := &Context{host: refusingHost{test.Context.host.(*testHost)}}
	err := ctx.StreamWrite([]byte("x"))
	var host *HostError
	if !errors.As(err, &host) || host.Op != "stream write" || host.Code != "too_large" || host.Retryable() {
		t.Fatalf("got %#v", err)
	}
	if len(test.Streamed) != 0 {
		t.Fatalf("streamed %q", test.Streamed)
	}
}

func TestStreamWriteAfterTheCallIsAnInvalidHostError(t *testing.T) {
	ctx := &Context{host: &cHost{}}
	err := ctx.StreamWrite([]byte("late"))
	var host *HostError
	if !errors.As(err, &host) || host.Code != "invalid" || host.Status != hostInvalid {
		t.Fatalf("got %#v", err)
	}
	if err.Error() != "stream write: invalid" {
		t.Fatalf("message %q", err.Error())
	}
}
