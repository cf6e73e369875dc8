// testing.go: a Context for a function's own tests: KV in memory, publishes, streamed chunks and logs recorded.
package squall

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TestContext is a local Context for `go test` (squall test DIR): config and secrets as
// given, KV in memory, publishes, streamed chunks (StreamWrite, in order) and log lines
// recorded.
type TestContext struct {
	*Context
	KV        map[string][]byte
	Published []Published
	Streamed  [][]byte
	Logs      []string
	cancelled bool
}

// Published is one publish a test context recorded.
type Published struct {
	Subject string
	Payload []byte
}

// NewTestContext makes a test context with `config` (may be nil) and `secrets` (may be nil).
func NewTestContext(config map[string]any, secrets map[string]string) *TestContext {
	merged := map[string]any{}
	for k, v := range config {
		merged[k] = v
	}
	if secrets != nil {
		merged["secrets"] = secrets
	}
	text, _ := json.Marshal(merged)
	t := &TestContext{KV: map[string][]byte{}}
	t.Context = &Context{host: &testHost{t: t, configJSON: text, due: time.Now().Add(time.Minute)}}
	return t
}

// Cancel makes Cancelled() true.
func (t *TestContext) Cancel() { t.cancelled = true }

// Call runs the registered handler with this context, as the platform would.
func (t *TestContext) Call(input []byte) ([]byte, error) {
	if registered == nil {
		return nil, fmt.Errorf("no handler: call squall.Handle from an init function of package main")
	}
	return registered(t.Context, input)
}

type testHost struct {
	t          *TestContext
	configJSON []byte
	due        time.Time
}

func (h *testHost) function() string     { return "test" }
func (h *testHost) invocationID() string { return "test-invocation" }
func (h *testHost) traceparent() string  { return "" }
func (h *testHost) config() []byte       { return h.configJSON }
func (h *testHost) event() []byte        { return []byte(`{"source":"test"}`) }
func (h *testHost) attempt() int         { return 1 }
func (h *testHost) deadline() time.Time  { return h.due }
func (h *testHost) end()                 {}

func (h *testHost) log(level Level, message string) {
	h.t.Logs = append(h.t.Logs, fmt.Sprintf("%d %s", level, message))
}

func (h *testHost) kvGet(key string) ([]byte, int32) {
	value, ok := h.t.KV[key]
	if !ok {
		return nil, hostNotFound
	}
	return append([]byte(nil), value...), 0
}

func (h *testHost) kvPut(key string, value []byte, _ uint64) int32 {
	if key == "" || len(key) > 256 {
		return hostInvalid
	}
	h.t.KV[key] = append([]byte(nil), value...)
	return 0
}

func (h *testHost) kvDelete(key string) int32 {
	delete(h.t.KV, key)
	return 0
}

func (h *testHost) publish(subject string, payload []byte) int32 {
	if !strings.HasPrefix(subject, "events.") {
		return hostDenied
	}
	h.t.Published = append(h.t.Published, Published{subject, append([]byte(nil), payload...)})
	return 0
}

func (h *testHost) cancelled() int32 {
	if h.t.cancelled {
		return 1
	}
	return 0
}

func (h *testHost) streamWrite(chunk []byte) int32 {
	h.t.Streamed = append(h.t.Streamed, append([]byte(nil), chunk...))
	return 0
}
