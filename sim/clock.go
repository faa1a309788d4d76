package sim

import (
	"sync"
	"time"
)

// Clock is the simulation's clock: it stands still until the runner moves
// it, so every entry the kernel writes during one step carries that step's
// time, however long the step took in real time. Pass Clock.Now as the
// kernel's and the drivers' clock. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{t: start} }

// Now returns the simulated time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t; the clock never goes back.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
}
