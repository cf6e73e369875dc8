// main_test.go: the function's tests; `squall test .` runs them (go test with the SDK).
package main

import (
	"testing"

	squall "squall.dev/sdk"
)

func TestGreetsByNameAndCountsVisits(t *testing.T) {
	ctx := squall.NewTestContext(map[string]any{"greeting": "Hi"}, nil)
	out, err := greet(ctx.Context, Input{Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Message != "Hi, Ada!" || out.Visits != 1 {
		t.Fatalf("got %+v", out)
	}
	again, _ := greet(ctx.Context, Input{})
	if again.Message != "Hi, world!" || again.Visits != 2 {
		t.Fatalf("got %+v", again)
	}
}
