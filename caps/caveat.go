package caps

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Caveats restrict what a grant admits. The zero value restricts nothing;
// each field left zero is "no restriction" (in a Delegate: "inherit").
type Caveats struct {
	// Expires is when the grant stops admitting calls.
	Expires time.Time
	// Window is the time of day, in the table's location, when calls are
	// admitted.
	Window Window
	// Rate limits calls through this grant (and, since a call through a
	// child is also a call through each ancestor, through its subtree).
	Rate Rate
	// Uses is how many calls the grant admits in all (1: a one-time grant).
	Uses int
	// Ranges bound named numeric arguments; a call that carries a bounded
	// argument outside its range is denied. One range per argument name,
	// sorted by name.
	Ranges []Range
	// Place narrows the paths calls may act on to this place and what it
	// contains; empty means the grant's target.
	Place string
	// NoReshare forbids delegating to another principal (attenuating for
	// oneself stays allowed).
	NoReshare bool
	// Presence binds the grant to each person being in each place: when one
	// leaves, the grant is revoked. Sorted.
	Presence []Presence
}

// Window is a time-of-day window [Start, End) in minutes after local
// midnight. End < Start wraps past midnight ("22:00-06:00"). Start == End
// (the zero value) means no window.
type Window struct {
	Start, End int
}

// Set reports whether w restricts anything.
func (w Window) Set() bool { return w.Start != w.End }

// Contains reports whether minute m of the day lies in w; an unset window
// contains every minute.
func (w Window) Contains(m int) bool {
	switch {
	case w.Start < w.End:
		return w.Start <= m && m < w.End
	case w.Start > w.End:
		return m >= w.Start || m < w.End
	}
	return true
}

func (w Window) valid() bool {
	return w.Start >= 0 && w.Start < minutesPerDay && w.End >= 0 && w.End < minutesPerDay
}

const minutesPerDay = 24 * 60

// String returns "HH:MM-HH:MM", or "" for no window.
func (w Window) String() string {
	if !w.Set() {
		return ""
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
}

// ParseWindow parses "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		start, err1 := parseClock(a)
		end, err2 := parseClock(b)
		if err1 == nil && err2 == nil && start != end {
			return Window{Start: start, End: end}, nil
		}
	}
	return Window{}, fmt.Errorf("parse window %q: want HH:MM-HH:MM with different ends", s)
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("bad clock %q", s)
	}
	return hh*60 + mm, nil
}

// minutes returns w as a set of minutes (every minute when unset).
func (w Window) minutes() *[minutesPerDay]bool {
	var set [minutesPerDay]bool
	for m := range set {
		set[m] = w.Contains(m)
	}
	return &set
}

// spans returns a set window as one or two half-open minute intervals
// within [0, minutesPerDay).
func (w Window) spans() [][2]int {
	if w.Start < w.End {
		return [][2]int{{w.Start, w.End}}
	}
	if w.End == 0 {
		return [][2]int{{w.Start, minutesPerDay}}
	}
	return [][2]int{{w.Start, minutesPerDay}, {0, w.End}}
}

// windowWithin reports whether every minute of c is in p.
func windowWithin(c, p Window) bool {
	if !p.Set() {
		return true
	}
	if !c.Set() {
		return false
	}
	// p's spans are maximal runs of minutes, so each of c's must lie in one.
	for _, cs := range c.spans() {
		if !slices.ContainsFunc(p.spans(), func(ps [2]int) bool { return ps[0] <= cs[0] && cs[1] <= ps[1] }) {
			return false
		}
	}
	return true
}

// windowMeet returns the intersection of a and b if it is one window.
func windowMeet(a, b Window) (Window, bool) {
	switch {
	case windowWithin(a, b):
		return a, true
	case windowWithin(b, a):
		return b, true
	}
	sa, sb := a.minutes(), b.minutes()
	var in [minutesPerDay]bool
	n := 0
	for m := range in {
		in[m] = sa[m] && sb[m]
		if in[m] {
			n++
		}
	}
	if n == 0 {
		return Window{}, false
	}
	// One cyclic run has exactly one minute whose predecessor is outside.
	start, runs := 0, 0
	for m := range in {
		if in[m] && !in[(m+minutesPerDay-1)%minutesPerDay] {
			start, runs = m, runs+1
		}
	}
	if runs != 1 {
		return Window{}, false
	}
	return Window{Start: start, End: (start + n) % minutesPerDay}, true
}

// Rate admits at most N calls in any period Per (a token bucket of N tokens
// refilled at N per Per). The zero value means no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// Set reports whether r limits anything.
func (r Rate) Set() bool { return r.N != 0 }

// String returns "N/Per", e.g. "10/1m0s", or "".
func (r Rate) String() string {
	if !r.Set() {
		return ""
	}
	return strconv.Itoa(r.N) + "/" + r.Per.String()
}

// ParseRate parses "N/duration", e.g. "10/1m".
func ParseRate(s string) (Rate, error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		n, err1 := strconv.Atoi(strings.TrimSpace(a))
		per, err2 := time.ParseDuration(strings.TrimSpace(b))
		if err1 == nil && err2 == nil && n > 0 && per > 0 {
			return Rate{N: n, Per: per}, nil
		}
	}
	return Rate{}, fmt.Errorf("parse rate %q: want N/duration with N > 0, e.g. 10/1m", s)
}

// rateWithin: c admits no more than p in any period: no larger burst and no
// higher sustained rate.
func rateWithin(c, p Rate) bool {
	if !p.Set() {
		return true
	}
	return c.Set() && c.N <= p.N && float64(c.N)*float64(p.Per) <= float64(p.N)*float64(c.Per)
}

// rateMeet returns a rate within both.
func rateMeet(a, b Rate) Rate {
	switch {
	case rateWithin(a, b):
		return a
	case rateWithin(b, a):
		return b
	}
	n := min(a.N, b.N)
	perCall := max(float64(a.Per)/float64(a.N), float64(b.Per)/float64(b.N))
	return Rate{N: n, Per: time.Duration(math.Ceil(perCall * float64(n)))}
}

// Range bounds the numeric argument Arg to [Min, Max]. Use ±Inf for an open
// end.
type Range struct {
	Arg      string
	Min, Max float64
}

// String returns "arg=min..max", leaving out infinite ends: "level=..60".
func (r Range) String() string {
	var b strings.Builder
	b.WriteString(r.Arg)
	b.WriteByte('=')
	if !math.IsInf(r.Min, -1) {
		b.WriteString(strconv.FormatFloat(r.Min, 'g', -1, 64))
	}
	b.WriteString("..")
	if !math.IsInf(r.Max, 1) {
		b.WriteString(strconv.FormatFloat(r.Max, 'g', -1, 64))
	}
	return b.String()
}

// ParseRange parses "arg=min..max"; either end may be left out.
func ParseRange(s string) (Range, error) {
	bad := func() (Range, error) {
		return Range{}, fmt.Errorf("parse range %q: want arg=min..max (an end may be empty), min <= max", s)
	}
	arg, span, ok := strings.Cut(strings.TrimSpace(s), "=")
	lo, hi, ok2 := strings.Cut(span, "..")
	if !ok || !ok2 || !isIdent(arg) {
		return bad()
	}
	r := Range{Arg: arg, Min: math.Inf(-1), Max: math.Inf(1)}
	var err error
	if lo = strings.TrimSpace(lo); lo != "" {
		if r.Min, err = strconv.ParseFloat(lo, 64); err != nil || math.IsNaN(r.Min) {
			return bad()
		}
	}
	if hi = strings.TrimSpace(hi); hi != "" {
		if r.Max, err = strconv.ParseFloat(hi, 64); err != nil || math.IsNaN(r.Max) {
			return bad()
		}
	}
	if r.Min > r.Max {
		return bad()
	}
	return r, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func findRange(rs []Range, arg string) (Range, bool) {
	for _, r := range rs {
		if r.Arg == arg {
			return r, true
		}
	}
	return Range{}, false
}

// String formats the caveats as space-separated key=value words, in a fixed
// order; "" for none.
func (c Caveats) String() string {
	var w []string
	if !c.Expires.IsZero() {
		w = append(w, "expires="+c.Expires.UTC().Format(time.RFC3339))
	}
	if c.Window.Set() {
		w = append(w, "window="+c.Window.String())
	}
	if c.Rate.Set() {
		w = append(w, "rate="+c.Rate.String())
	}
	if c.Uses != 0 {
		w = append(w, "uses="+strconv.Itoa(c.Uses))
	}
	for _, r := range c.Ranges {
		w = append(w, "range:"+r.String())
	}
	if c.Place != "" {
		w = append(w, "place="+c.Place)
	}
	if c.NoReshare {
		w = append(w, "noreshare")
	}
	for _, p := range c.Presence {
		w = append(w, "presence="+p.String())
	}
	return strings.Join(w, " ")
}

// normalize sorts ranges and presences, strips monotonic clock readings and
// checks each field on its own.
func (c *Caveats) normalize() error {
	c.Expires = c.Expires.Round(0)
	if !c.Window.valid() {
		return fmt.Errorf("window %d-%d: minutes must be in [0, 1440)", c.Window.Start, c.Window.End)
	}
	if c.Rate.Set() && (c.Rate.N < 0 || c.Rate.Per <= 0) {
		return fmt.Errorf("rate %d per %v: want N > 0 and a positive period", c.Rate.N, c.Rate.Per)
	}
	if c.Uses < 0 {
		return fmt.Errorf("uses %d: want >= 0", c.Uses)
	}
	c.Ranges = slices.Clone(c.Ranges)
	slices.SortFunc(c.Ranges, func(a, b Range) int { return strings.Compare(a.Arg, b.Arg) })
	for i, r := range c.Ranges {
		if !isIdent(r.Arg) || math.IsNaN(r.Min) || math.IsNaN(r.Max) || r.Min > r.Max {
			return fmt.Errorf("range %v: want an argument name and min <= max", r)
		}
		if i > 0 && c.Ranges[i-1].Arg == r.Arg {
			return fmt.Errorf("two ranges for argument %q", r.Arg)
		}
	}
	c.Presence = slices.Clone(c.Presence)
	slices.SortFunc(c.Presence, comparePresence)
	c.Presence = slices.Compact(c.Presence)
	for _, p := range c.Presence {
		if p.Person == "" || p.Place == "" {
			return fmt.Errorf("presence %q: want person and place", p)
		}
	}
	return nil
}

func comparePresence(a, b Presence) int {
	if c := strings.Compare(a.Person, b.Person); c != 0 {
		return c
	}
	return strings.Compare(a.Place, b.Place)
}

// within reports whether c (with effective place scope cScope) admits no more
// than p (scope pScope); if not, it says which caveat is wider. usesLeft is
// how many uses p has left (p.Uses minus those spent).
func within(c Caveats, cScope string, p Caveats, pScope string, usesLeft int) (bool, string) {
	if !pathWithin(cScope, pScope) {
		return false, fmt.Sprintf("place %s is outside %s", cScope, pScope)
	}
	if !p.Expires.IsZero() && (c.Expires.IsZero() || c.Expires.After(p.Expires)) {
		return false, fmt.Sprintf("expiry %s is later than %s", fmtTime(c.Expires), fmtTime(p.Expires))
	}
	if !windowWithin(c.Window, p.Window) {
		return false, fmt.Sprintf("window %q is wider than %q", c.Window, p.Window)
	}
	if !rateWithin(c.Rate, p.Rate) {
		return false, fmt.Sprintf("rate %q is higher than %q", c.Rate, p.Rate)
	}
	if p.Uses != 0 && (c.Uses == 0 || c.Uses > usesLeft) {
		return false, fmt.Sprintf("uses %s exceed %d left", fmtUses(c.Uses), usesLeft)
	}
	for _, pr := range p.Ranges {
		cr, ok := findRange(c.Ranges, pr.Arg)
		if !ok || cr.Min < pr.Min || cr.Max > pr.Max {
			if !ok {
				cr = Range{Arg: pr.Arg, Min: math.Inf(-1), Max: math.Inf(1)}
			}
			return false, fmt.Sprintf("range %s is wider than %s", cr, pr)
		}
	}
	if p.NoReshare && !c.NoReshare {
		return false, "drops noreshare"
	}
	for _, pp := range p.Presence {
		if !slices.ContainsFunc(c.Presence, func(cp Presence) bool {
			return cp.Person == pp.Person && pathWithin(cp.Place, pp.Place)
		}) {
			return false, "drops presence binding " + pp.String()
		}
	}
	return true, ""
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtUses(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

// overlay returns p with every field that r sets replaced by r's (r's
// ranges replace p's for the same argument; presence bindings add up). The
// caller has checked r against p with within.
func overlay(p, r Caveats) Caveats {
	c := p
	c.Ranges = slices.Clone(p.Ranges)
	c.Presence = slices.Clone(p.Presence)
	if !r.Expires.IsZero() {
		c.Expires = r.Expires
	}
	if r.Window.Set() {
		c.Window = r.Window
	}
	if r.Rate.Set() {
		c.Rate = r.Rate
	}
	if r.Uses != 0 {
		c.Uses = r.Uses
	}
	for _, rr := range r.Ranges {
		if i := slices.IndexFunc(c.Ranges, func(x Range) bool { return x.Arg == rr.Arg }); i >= 0 {
			c.Ranges[i] = rr
		} else {
			c.Ranges = append(c.Ranges, rr)
		}
	}
	slices.SortFunc(c.Ranges, func(a, b Range) int { return strings.Compare(a.Arg, b.Arg) })
	if r.Place != "" {
		c.Place = r.Place
	}
	c.NoReshare = c.NoReshare || r.NoReshare
	c.Presence = append(c.Presence, r.Presence...)
	slices.SortFunc(c.Presence, comparePresence)
	c.Presence = slices.Compact(c.Presence)
	return c
}

// meet returns caveats within both a and b, or why there are none.
func meet(a, b Caveats) (Caveats, error) {
	c := Caveats{NoReshare: a.NoReshare || b.NoReshare}
	switch {
	case a.Expires.IsZero():
		c.Expires = b.Expires
	case b.Expires.IsZero() || a.Expires.Before(b.Expires):
		c.Expires = a.Expires
	default:
		c.Expires = b.Expires
	}
	switch {
	case !a.Window.Set():
		c.Window = b.Window
	case !b.Window.Set():
		c.Window = a.Window
	default:
		w, ok := windowMeet(a.Window, b.Window)
		if !ok {
			return Caveats{}, fmt.Errorf("windows %s and %s do not overlap in one window", a.Window, b.Window)
		}
		c.Window = w
	}
	switch {
	case !a.Rate.Set():
		c.Rate = b.Rate
	case !b.Rate.Set():
		c.Rate = a.Rate
	default:
		c.Rate = rateMeet(a.Rate, b.Rate)
	}
	switch {
	case a.Uses == 0:
		c.Uses = b.Uses
	case b.Uses == 0:
		c.Uses = a.Uses
	default:
		c.Uses = min(a.Uses, b.Uses)
	}
	c.Ranges = slices.Clone(a.Ranges)
	for _, br := range b.Ranges {
		i := slices.IndexFunc(c.Ranges, func(x Range) bool { return x.Arg == br.Arg })
		if i < 0 {
			c.Ranges = append(c.Ranges, br)
			continue
		}
		ar := c.Ranges[i]
		m := Range{Arg: br.Arg, Min: max(ar.Min, br.Min), Max: min(ar.Max, br.Max)}
		if m.Min > m.Max {
			return Caveats{}, fmt.Errorf("ranges %s and %s do not overlap", ar, br)
		}
		c.Ranges[i] = m
	}
	slices.SortFunc(c.Ranges, func(x, y Range) int { return strings.Compare(x.Arg, y.Arg) })
	switch {
	case a.Place == "":
		c.Place = b.Place
	case b.Place == "":
		c.Place = a.Place
	case pathWithin(b.Place, a.Place):
		c.Place = b.Place
	case pathWithin(a.Place, b.Place):
		c.Place = a.Place
	default:
		return Caveats{}, fmt.Errorf("places %s and %s are disjoint", a.Place, b.Place)
	}
	c.Presence = append(slices.Clone(a.Presence), b.Presence...)
	slices.SortFunc(c.Presence, comparePresence)
	c.Presence = slices.Compact(c.Presence)
	return c, nil
}

// pathWithin reports whether path p is scope or lies inside it.
func pathWithin(p, scope string) bool {
	return len(p) >= len(scope) && p[:len(scope)] == scope && (len(p) == len(scope) || p[len(scope)] == '/')
}
