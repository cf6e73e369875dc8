// main.go: the hello example in Go: greets a name with the config's greeting word and counts each name's visits in the function's state.
package main

import (
	"fmt"
	"strconv"
	"strings"

	squall "squall.dev/sdk"
)

// maxNameBytes bounds a name so that its state key stays well under the 256 bytes a key may have.
const maxNameBytes = 64

type input struct {
	Name string `json:"name"`
}

type output struct {
	Greeting string `json:"greeting"`
	Visits   int    `json:"visits"`
}

// visitsKey is the state key of a name's counter: `visits/` and the name's UTF-8 bytes, each
// byte that is not a letter, digit, `_`, `.` or `-` written as `=XX` ("Zoë Ng" is
// `visits/Zo=C3=AB=20Ng`): readable, and never two names on one key.
func visitsKey(name string) string {
	var key strings.Builder
	key.WriteString("visits/")
	for _, b := range []byte(name) {
		plain := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '_' || b == '.' || b == '-'
		if plain {
			key.WriteByte(b)
		} else {
			fmt.Fprintf(&key, "=%02X", b)
		}
	}
	return key.String()
}

// hello answers `{"name": "Ada"}` (the name may be left out) with `{"greeting": "Hello, Ada!",
// "visits": 3}`.
func hello(ctx *squall.Context, in input) (output, error) {
	name := strings.TrimSpace(in.Name)
	if name == "" {
		name = "world"
	}
	if len(name) > maxNameBytes {
		return output{}, fmt.Errorf("a name is at most %d bytes of UTF-8", maxNameBytes)
	}
	word := ctx.ConfigString("greeting")
	if word == "" {
		word = "Hello"
	}
	// Read, add one, write: two calls for one name at the same instant can both read the
	// same count (one call at a time per process, but a fleet has several).
	key := visitsKey(name)
	visits := 1
	seen, found, err := ctx.KVGet(key)
	if err != nil {
		return output{}, err
	}
	if found {
		count, err := strconv.Atoi(string(seen))
		if err != nil {
			return output{}, fmt.Errorf("the counter of %q is not a number: %w", name, err)
		}
		visits = count + 1
	}
	if err := ctx.KVPut(key, []byte(strconv.Itoa(visits)), 0); err != nil {
		return output{}, err
	}
	ctx.Info(fmt.Sprintf("hello: greeting %s (visit %d)", name, visits))
	return output{Greeting: fmt.Sprintf("%s, %s!", word, name), Visits: visits}, nil
}

// The handler is registered when the library loads; a library's main never runs.
func init() { squall.HandleJSON(hello) }

func main() {}
