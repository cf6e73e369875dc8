// main.go: a Squall function in Go. `squall deploy .` builds it into a library and deploys it.
package main

import (
	"fmt"
	"time"

	squall "squall.dev/sdk"
)

type Input struct {
	Name string `json:"name"`
}

type Output struct {
	Message string `json:"message"`
	Visits  int    `json:"visits"`
}

func greet(ctx *squall.Context, in Input) (Output, error) {
	name := in.Name
	if name == "" {
		name = "world"
	}
	greeting := ctx.ConfigString("greeting")
	if greeting == "" {
		greeting = "Hello"
	}
	visits := 1
	if seen, ok, err := ctx.KVGet("visits"); err != nil {
		return Output{}, err
	} else if ok {
		fmt.Sscan(string(seen), &visits)
		visits++
	}
	if err := ctx.KVPut("visits", []byte(fmt.Sprint(visits)), 24*time.Hour); err != nil {
		return Output{}, err
	}
	ctx.Info(fmt.Sprintf("greeting %s (attempt %d)", name, ctx.Attempt()))
	return Output{Message: fmt.Sprintf("%s, %s!", greeting, name), Visits: visits}, nil
}

// The handler is registered when the library loads; main never runs in a library.
func init() { squall.HandleJSON(greet) }

func main() {}
