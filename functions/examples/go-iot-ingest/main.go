// main.go: go-iot-ingest: folds device telemetry into per-device, per-minute windows in the function's state, as the Rust iot-ingest does.
//
// Invoked by a subject trigger on `devices.*.telemetry` with a reading as JSON: `{"seq": 12,
// "value": 21.5, "ts_ms": 1700000000000}`. It keeps, per device and minute of `ts_ms`, the
// min, max, mean and count under `window/<device>/<minute>`, and publishes each updated window
// on `events.iot.window`. A redelivered reading is applied once: a window remembers the
// sequence numbers it holds. Asked `{"device": "d7"}` instead, it answers that device's
// windows, oldest first.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	squall "squall.dev/sdk"
)

// keptMinutes is how many minutes of windows a device's index remembers.
const keptMinutes = 60

type input struct {
	Seq    *uint64  `json:"seq"`
	Value  *float64 `json:"value"`
	TsMs   *uint64  `json:"ts_ms"`
	Device string   `json:"device"`
}

// Window is one device's minute.
type Window struct {
	Device   string   `json:"device"`
	MinuteMs uint64   `json:"minute_ms"`
	Count    uint64   `json:"count"`
	Min      float64  `json:"min"`
	Max      float64  `json:"max"`
	Sum      float64  `json:"sum"`
	Mean     float64  `json:"mean"`
	Seqs     []uint64 `json:"seqs"`
}

type deviceIndex struct {
	Minutes []uint64 `json:"minutes"`
}

// deviceOf is the device id of a `devices.<id>.telemetry` subject, or "".
func deviceOf(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) == 3 && parts[0] == "devices" && parts[2] == "telemetry" && validDevice(parts[1]) {
		return parts[1]
	}
	return ""
}

// validDevice says whether an id is usable in a key.
func validDevice(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, b := range []byte(id) {
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_'
		if !ok {
			return false
		}
	}
	return true
}

// apply adds a reading to a window (pure); true when the reading was there already.
func apply(window *Window, device string, minuteMs, seq uint64, value float64) (*Window, bool) {
	if window == nil {
		window = &Window{Device: device, MinuteMs: minuteMs, Min: math.Inf(1), Max: math.Inf(-1)}
	}
	i := sort.Search(len(window.Seqs), func(i int) bool { return window.Seqs[i] >= seq })
	if i < len(window.Seqs) && window.Seqs[i] == seq {
		return window, true
	}
	window.Seqs = append(window.Seqs[:i], append([]uint64{seq}, window.Seqs[i:]...)...)
	window.Count++
	window.Min = math.Min(window.Min, value)
	window.Max = math.Max(window.Max, value)
	window.Sum += value
	window.Mean = window.Sum / float64(window.Count)
	return window, false
}

func getJSON(ctx *squall.Context, key string, into any) (bool, error) {
	value, found, err := ctx.KVGet(key)
	if err != nil || !found {
		return false, err
	}
	if err := json.Unmarshal(value, into); err != nil {
		return false, fmt.Errorf("%s holds no valid JSON: %w", key, err)
	}
	return true, nil
}

func putJSON(ctx *squall.Context, key string, value any) error {
	text, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return ctx.KVPut(key, text, 0)
}

func windows(ctx *squall.Context, device string) (any, error) {
	if !validDevice(device) {
		return nil, fmt.Errorf("invalid device id %q", device)
	}
	var index deviceIndex
	if _, err := getJSON(ctx, "device/"+device, &index); err != nil {
		return nil, err
	}
	found := []Window{}
	for _, minute := range index.Minutes {
		var window Window
		ok, err := getJSON(ctx, fmt.Sprintf("window/%s/%d", device, minute), &window)
		if err != nil {
			return nil, err
		}
		if ok {
			found = append(found, window)
		}
	}
	return map[string]any{"device": device, "windows": found}, nil
}

func ingest(ctx *squall.Context, in input) (any, error) {
	if in.Device != "" {
		return windows(ctx, in.Device)
	}
	if in.Seq == nil || in.Value == nil || in.TsMs == nil {
		return nil, errors.New("a reading has seq, value and ts_ms; a query has device")
	}
	subject, _ := ctx.Trigger()["subject"].(string)
	device := deviceOf(subject)
	if device == "" {
		return nil, fmt.Errorf("not a device telemetry subject: %q", subject)
	}
	if math.IsNaN(*in.Value) || math.IsInf(*in.Value, 0) {
		return nil, errors.New("value must be a finite number")
	}
	minuteMs := *in.TsMs - *in.TsMs%60_000
	key := fmt.Sprintf("window/%s/%d", device, minuteMs)
	var stored Window
	found, err := getJSON(ctx, key, &stored)
	if err != nil {
		return nil, err
	}
	var current *Window
	if found {
		current = &stored
	}
	window, duplicate := apply(current, device, minuteMs, *in.Seq, *in.Value)
	if !duplicate {
		if err := putJSON(ctx, key, window); err != nil {
			return nil, err
		}
		indexKey := "device/" + device
		var index deviceIndex
		if _, err := getJSON(ctx, indexKey, &index); err != nil {
			return nil, err
		}
		if i := sort.Search(len(index.Minutes), func(i int) bool { return index.Minutes[i] >= minuteMs }); i == len(index.Minutes) || index.Minutes[i] != minuteMs {
			index.Minutes = append(index.Minutes[:i], append([]uint64{minuteMs}, index.Minutes[i:]...)...)
			if excess := len(index.Minutes) - keptMinutes; excess > 0 {
				index.Minutes = index.Minutes[excess:]
			}
			if err := putJSON(ctx, indexKey, index); err != nil {
				return nil, err
			}
		}
	}
	// Published even for a duplicate: the same event id, so the stream drops a repeat.
	event, err := json.Marshal(window)
	if err != nil {
		return nil, err
	}
	if err := ctx.Publish("events.iot.window", event); err != nil {
		return nil, err
	}
	return map[string]any{"device": device, "minute_ms": minuteMs, "count": window.Count, "duplicate": duplicate}, nil
}

func init() { squall.HandleJSON(ingest) }

func main() {}
