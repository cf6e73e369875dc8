// json.go: typed JSON handlers: the input decoded into a Go type, the output encoded from one.
package squall

import (
	"encoding/json"
	"fmt"
)

// HandleJSON registers a handler that takes the input decoded from JSON into In (the zero
// value for an empty input) and returns a value encoded as JSON. An input that is not valid
// JSON for In fails the invocation, naming the type.
func HandleJSON[In any, Out any](handler func(ctx *Context, input In) (Out, error)) {
	Handle(func(ctx *Context, raw []byte) ([]byte, error) {
		var input In
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &input); err != nil {
				return nil, fmt.Errorf("the input is not JSON for %T: %w", input, err)
			}
		}
		output, err := handler(ctx, input)
		if err != nil {
			return nil, err
		}
		encoded, err := json.Marshal(output)
		if err != nil {
			return nil, fmt.Errorf("the output cannot be encoded as JSON: %w", err)
		}
		return encoded, nil
	})
}
