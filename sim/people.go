package sim

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Person is a simulated occupant, known by a pseudonym (PersonID). Their
// day follows a schedule drawn from the seed: arrive between 08:00 and
// 09:30 at their home room, up to two meetings in other rooms, lunch out
// of the building, and leave between 16:30 and 18:30. Nobody comes on
// Saturdays and Sundays.
type Person struct {
	ID   string
	Home string // the room path of their desk

	seed  uint64
	rooms []string
	day   int64 // the day cached in stints, days since the Unix epoch
	have  bool
	stint []stint
}

// stint is a stretch of time in one room ("" = out of the building).
type stint struct {
	from, to time.Time
	room     string
}

// At returns the room the person is in at t, or "" when they are out.
func (p *Person) At(t time.Time) string {
	t = t.UTC()
	day := t.Unix() / 86400
	if !p.have || p.day != day {
		p.stint, p.day, p.have = p.schedule(day), day, true
	}
	// Later stints (meetings, lunch) override earlier ones (the desk).
	for i := len(p.stint) - 1; i >= 0; i-- {
		s := p.stint[i]
		if !t.Before(s.from) && t.Before(s.to) {
			return s.room
		}
	}
	return ""
}

// Schedule describes the person's day containing t, one line per stint.
func (p *Person) Schedule(t time.Time) []string {
	p.At(t)
	out := make([]string, len(p.stint))
	for i, s := range p.stint {
		where := s.room
		if where == "" {
			where = "out"
		}
		out[i] = fmt.Sprintf("%s-%s %s", s.from.Format("15:04"), s.to.Format("15:04"), where)
	}
	return out
}

// schedule draws the stints of one day: a pure function of the seed, the
// person and the day.
func (p *Person) schedule(day int64) []stint {
	midnight := time.Unix(day*86400, 0).UTC()
	if wd := midnight.Weekday(); wd == time.Saturday || wd == time.Sunday {
		return nil
	}
	rng := rand.New(rand.NewPCG(p.seed, uint64(day)))
	at := func(h, m int) time.Time {
		return midnight.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
	}
	arrive := at(8, rng.IntN(91))
	leave := at(16, 30+rng.IntN(121))
	s := []stint{{arrive, leave, p.Home}}
	lunch := at(11, 45+rng.IntN(61))
	lunchEnd := lunch.Add(time.Duration(30+rng.IntN(31)) * time.Minute)
	for range rng.IntN(3) {
		start := at(9, 30*rng.IntN(13))
		end := start.Add(time.Duration(30*(1+rng.IntN(2))) * time.Minute)
		room := p.rooms[rng.IntN(len(p.rooms))]
		if end.After(lunch) && start.Before(lunchEnd) || !start.After(arrive) || !end.Before(leave) {
			continue
		}
		s = append(s, stint{start, end, room})
	}
	return append(s, stint{lunch, lunchEnd, ""})
}

// newPeople makes n people with home rooms spread over rooms in an order
// drawn from the seed.
func newPeople(seed int64, n int, rooms []string) []*Person {
	if len(rooms) == 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x7065_6f70_6c65)) // "people"
	order := rng.Perm(len(rooms))
	ps := make([]*Person, n)
	for i := range ps {
		ps[i] = &Person{
			ID:    PersonID(i + 1),
			Home:  rooms[order[i%len(rooms)]],
			seed:  rng.Uint64(),
			rooms: rooms,
		}
	}
	return ps
}
