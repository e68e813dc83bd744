package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestRefusesWhenNotPID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("the test itself runs as PID 1")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"/init"}, &stdout, &stderr); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "must run as PID 1") {
		t.Errorf("stderr %q, want the PID 1 refusal", stderr.String())
	}
}

func TestAgentRejectsBadPort(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"/init", "agent", "--port=0"}, &stdout, &stderr); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "bad port") {
		t.Errorf("stderr %q", stderr.String())
	}
}
