// errors.go: the errors a handler returns or meets: typed retries and failed host calls.
package squall

import (
	"fmt"
	"time"
)

// RetryError asks the platform for another attempt after After (0: the function's backoff
// policy decides). Make one with Retry.
type RetryError struct {
	After   time.Duration
	Message string
}

func (e *RetryError) Error() string {
	if e.Message == "" {
		return "retry requested"
	}
	return e.Message
}

// Retry returns an error that asks for another attempt after `after`.
func Retry(after time.Duration, message string) error {
	if after < 0 {
		after = 0
	}
	return &RetryError{After: after, Message: message}
}

// HostError is a failed host call (KV, publish or stream write). Code says why: "unavailable"
// (the store did not answer in time; returned uncaught, it asks for a retry), "denied",
// "too_large", "invalid" (a malformed key or subject, a call after the invocation returned, or
// a stream write on a host too old to stream) or "status N".
type HostError struct {
	Op     string
	Code   string
	Status int32
}

func (e *HostError) Error() string { return fmt.Sprintf("%s: %s", e.Op, e.Code) }

// Retryable says whether another attempt may succeed.
func (e *HostError) Retryable() bool { return e.Status == hostUnavailable }

func hostError(op string, status int32) error {
	if status >= 0 {
		return nil
	}
	code := fmt.Sprintf("status %d", status)
	switch status {
	case hostUnavailable:
		code = "unavailable"
	case hostDenied:
		code = "denied"
	case hostTooLarge:
		code = "too_large"
	case hostInvalid:
		code = "invalid"
	}
	return &HostError{Op: op, Code: code, Status: status}
}
