// context.go: the Context a handler gets: the invocation's facts, its logs and the host services.
package squall

import (
	"encoding/json"
	"fmt"
	"time"
)

// Level is a log line's level, as the platform numbers them.
type Level uint32

const (
	LevelError Level = 1
	LevelWarn  Level = 2
	LevelInfo  Level = 3
	LevelDebug Level = 4
	LevelTrace Level = 5
)

// Context is one invocation as the handler sees it. It is valid during the call only: after the
// handler returns, its host calls fail with an "invalid" HostError and its logs go nowhere.
// Use it from the handler's goroutine or from goroutines that end before the handler returns.
type Context struct {
	host host
}

func (c *Context) end() { c.host.end() }

// FunctionName is the function's name.
func (c *Context) FunctionName() string { return c.host.function() }

// InvocationID is the invocation's id.
func (c *Context) InvocationID() string { return c.host.invocationID() }

// Traceparent is the W3C traceparent of the invocation's trace ("" when there is none).
func (c *Context) Traceparent() string { return c.host.traceparent() }

// Attempt is the attempt number, 1-based.
func (c *Context) Attempt() int { return c.host.attempt() }

// Deadline is when the attempt times out.
func (c *Context) Deadline() time.Time { return c.host.deadline() }

// Remaining is the time left before the deadline (0 once it passed).
func (c *Context) Remaining() time.Duration {
	left := time.Until(c.Deadline())
	if left < 0 {
		return 0
	}
	return left
}

// ConfigJSON is the function's config values, a JSON object.
func (c *Context) ConfigJSON() []byte { return c.host.config() }

// Config is the function's config values (an empty map when there are none).
func (c *Context) Config() map[string]any {
	return object(c.host.config())
}

// ConfigString is the config value `key` when it is a string, else "".
func (c *Context) ConfigString(key string) string {
	value, _ := c.Config()[key].(string)
	return value
}

// Secrets is the function's secrets (the config's `secrets` object), by name.
func (c *Context) Secrets() map[string]string {
	secrets := map[string]string{}
	if values, ok := c.Config()["secrets"].(map[string]any); ok {
		for name, value := range values {
			if text, ok := value.(string); ok {
				secrets[name] = text
			}
		}
	}
	return secrets
}

// TriggerJSON is what started the invocation, a JSON object ({"source": "http" | "nats" |
// "cron" | "kv" | "web", ...}).
func (c *Context) TriggerJSON() []byte { return c.host.event() }

// Trigger is TriggerJSON parsed (an empty map when there is none).
func (c *Context) Trigger() map[string]any { return object(c.host.event()) }

// Log writes a line to the invocation's logs.
func (c *Context) Log(level Level, message string) { c.host.log(level, message) }

// Logf writes a formatted line to the invocation's logs at info level.
func (c *Context) Logf(format string, args ...any) {
	c.host.log(LevelInfo, fmt.Sprintf(format, args...))
}

// Debug, Info, Warn and Error write a line at their level.
func (c *Context) Debug(message string) { c.host.log(LevelDebug, message) }
func (c *Context) Info(message string)  { c.host.log(LevelInfo, message) }
func (c *Context) Warn(message string)  { c.host.log(LevelWarn, message) }
func (c *Context) Error(message string) { c.host.log(LevelError, message) }

// Cancelled says whether the invocation was cancelled (DELETE /v1/invocations/{id}): stop
// early; whatever the handler returns, the invocation ends `cancelled`. Cheap: a lookup in
// the worker's memory.
func (c *Context) Cancelled() bool { return c.host.cancelled() == 1 }

// StreamWrite writes one chunk of the output now: a caller that asked for a stream receives it
// at once. Once a function has streamed, what the handler returns is sent as the last chunk
// (return nil to add nothing), and the invocation is not retried. The error is a *HostError:
// "too_large" past the output limit, "invalid" on a host too old to stream (return the whole
// output instead) or after the handler returned.
func (c *Context) StreamWrite(chunk []byte) error {
	return hostError("stream write", c.host.streamWrite(chunk))
}

// KVGet reads `key` of the function's own state: the value and true, or nil and false when
// there is no such key.
func (c *Context) KVGet(key string) ([]byte, bool, error) {
	value, status := c.host.kvGet(key)
	switch {
	case status == 0:
		return value, true, nil
	case status == hostNotFound:
		return nil, false, nil
	default:
		return nil, false, hostError("kv get", status)
	}
}

// KVPut writes `key`; a ttl of 0 keeps it until it is deleted.
func (c *Context) KVPut(key string, value []byte, ttl time.Duration) error {
	return hostError("kv put", c.host.kvPut(key, value, uint64(ttl.Milliseconds())))
}

// KVDelete deletes `key`; deleting an absent key succeeds.
func (c *Context) KVDelete(key string) error {
	return hostError("kv delete", c.host.kvDelete(key))
}

// Publish publishes `payload` on `subject`, which must start with "events.". A retried attempt
// does not publish twice.
func (c *Context) Publish(subject string, payload []byte) error {
	return hostError("publish", c.host.publish(subject, payload))
}

func object(text []byte) map[string]any {
	values := map[string]any{}
	if len(text) > 0 {
		_ = json.Unmarshal(text, &values)
	}
	return values
}
