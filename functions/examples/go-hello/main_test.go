// main_test.go: the example's unit tests with a local context; `squall test .` runs them.
package main

import (
	"strings"
	"testing"

	squall "squall.dev/sdk"
)

func TestGreetsWithTheConfiguredWordAndCountsVisitsPerName(t *testing.T) {
	ctx := squall.NewTestContext(map[string]any{"greeting": "Hi"}, nil)
	for i, want := range []int{1, 2} {
		out, err := hello(ctx.Context, input{Name: "Ada"})
		if err != nil || out.Greeting != "Hi, Ada!" || out.Visits != want {
			t.Fatalf("call %d: %+v %v", i, out, err)
		}
	}
	if string(ctx.KV["visits/Ada"]) != "2" {
		t.Fatalf("state: %q", ctx.KV)
	}
	if len(ctx.Logs) != 2 || !strings.Contains(ctx.Logs[1], "hello: greeting Ada (visit 2)") {
		t.Fatalf("logs: %q", ctx.Logs)
	}
}

func TestEscapesNamesIntoKeysAndRefusesLongOnes(t *testing.T) {
	if key := visitsKey("Zoë Ng"); key != "visits/Zo=C3=AB=20Ng" {
		t.Fatalf("key %q", key)
	}
	ctx := squall.NewTestContext(nil, nil)
	if _, err := hello(ctx.Context, input{Name: strings.Repeat("x", 65)}); err == nil {
		t.Fatal("a long name is refused")
	}
}
