// main_test.go: the window arithmetic and subject parsing, without a platform.
package main

import "testing"

func TestAWindowKeepsMinMaxMeanAndCountAndARepeatChangesNothing(t *testing.T) {
	w, _ := apply(nil, "d1", 120_000, 1, 20)
	w, _ = apply(w, "d1", 120_000, 2, 10)
	w, _ = apply(w, "d1", 120_000, 3, 30)
	if w.Count != 3 || w.Min != 10 || w.Max != 30 || w.Mean != 20 {
		t.Fatalf("%+v", w)
	}
	if _, duplicate := apply(w, "d1", 120_000, 2, 99); !duplicate || w.Count != 3 {
		t.Fatalf("a repeat was applied: %+v", w)
	}
}

func TestOnlyDeviceTelemetrySubjectsNameADevice(t *testing.T) {
	cases := map[string]string{"devices.d7.telemetry": "d7", "devices.d7.status": "", "devices.d7.telemetry.x": "", "devices.a$b.telemetry": ""}
	for subject, want := range cases {
		if got := deviceOf(subject); got != want {
			t.Errorf("%s: %q, want %q", subject, got, want)
		}
	}
}
