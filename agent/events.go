package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/boxd-dev/boxd/agent/wire"
)

// Subscription is a stream of guest events.
type Subscription struct {
	ch   *wire.Channel
	sc   *bufio.Scanner
	stop func() bool
}

// Subscribe starts a stream of events: TCP ports starting and stopping to
// listen (the ports already listening are reported first, as port_open),
// exits of processes the agent started, and OOM kills (best effort). The agent
// watches for ports only while someone subscribes. A subscriber that falls far
// behind gets an overflow event counting what it lost. Cancelling ctx or
// Close ends the subscription.
func (c *Client) Subscribe(ctx context.Context) (*Subscription, error) {
	ch, err := c.open(ctx, wire.OpSubscribe, nil, nil)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(ch.Reader(wire.StreamStdout))
	sc.Buffer(make([]byte, 4096), wire.MaxEventLine)
	return &Subscription{ch: ch, sc: sc, stop: context.AfterFunc(ctx, ch.Abort)}, nil
}

// Next blocks for the next event. It returns io.EOF when the subscription
// ends normally and another error when it was cancelled or broken.
func (s *Subscription) Next() (Event, error) {
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return Event{}, fmt.Errorf("events: %w", err)
		}
		return Event{}, io.EOF
	}
	var ev Event
	if err := json.Unmarshal(s.sc.Bytes(), &ev); err != nil {
		s.Close()
		return Event{}, fmt.Errorf("events: %w: %w", ErrProtocol, err)
	}
	return ev, nil
}

// Close ends the subscription.
func (s *Subscription) Close() error {
	s.stop()
	s.ch.Abort()
	return nil
}
