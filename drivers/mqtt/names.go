package mqtt

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/osmose-os/osmose/schema"
)

// FriendlyName returns the Zigbee2MQTT friendly name of the device at a
// topology path: the path itself ("cambridge/pembroke/f1/r12/light-3"),
// whose slashes Zigbee2MQTT turns into levels of the topic tree.
func FriendlyName(path string) string { return path }

// validTopicPart checks a piece of topic: not empty, no empty level, no
// wildcard, no NUL.
func validTopicPart(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case strings.ContainsAny(s, "+#\x00"):
		return errors.New("contains an MQTT wildcard (+ #) or NUL")
	case strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//"):
		return errors.New("has an empty level")
	}
	return nil
}

// validName checks a friendly name as Zigbee2MQTT would.
func validName(name string) error {
	if err := validTopicPart(name); err != nil {
		return err
	}
	if name == "bridge" || strings.HasPrefix(name, "bridge/") {
		return errors.New(`starts with "bridge", Zigbee2MQTT's own topic`)
	}
	last := name[strings.LastIndexByte(name, '/')+1:]
	if strings.Contains(name, "/") && strings.Trim(last, "0123456789") == "" {
		return errors.New(`ends in "/<digits>", which Zigbee2MQTT reads as an endpoint`)
	}
	return nil
}

// ButtonEvent is one event of a switch action.
type ButtonEvent struct {
	Kind   schema.SwitchEventKind // press, release or long press
	Button uint8                  // the button's index in the switch's names
}

var (
	press     = schema.SwitchEventKind_press
	release   = schema.SwitchEventKind_release
	longPress = schema.SwitchEventKind_longPress
)

// actionWords are the event parts of Zigbee2MQTT actions, longest first
// where one ends another.
var actionWords = []struct {
	word  string
	kinds []schema.SwitchEventKind
}{
	{"press_release", []schema.SwitchEventKind{release}},
	{"hold_release", []schema.SwitchEventKind{release}},
	{"long_release", []schema.SwitchEventKind{release}},
	{"long_press", []schema.SwitchEventKind{longPress}},
	{"release", []schema.SwitchEventKind{release}},
	{"press", []schema.SwitchEventKind{press}},
	{"hold", []schema.SwitchEventKind{longPress}},
	{"long", []schema.SwitchEventKind{longPress}},
	{"single", []schema.SwitchEventKind{press, release}},
	{"click", []schema.SwitchEventKind{press, release}},
	{"double", []schema.SwitchEventKind{press, release, press, release}},
	{"triple", []schema.SwitchEventKind{press, release, press, release, press, release}},
}

// ParseAction turns a Zigbee2MQTT action ("single", "on_press",
// "button_2_hold", "single_left", "off") into button events, given the
// switch's button names (nil: one button, actions without a button part).
// See the package doc for the vocabulary.
func ParseAction(action string, buttons []string) ([]ButtonEvent, error) {
	index := func(name string) (uint8, error) {
		if name == "" {
			if len(buttons) <= 1 {
				return 0, nil
			}
			return 0, fmt.Errorf("action %q names no button of %q", action, buttons)
		}
		i := slices.Index(buttons, name)
		if i < 0 || i > 255 {
			return 0, fmt.Errorf("action %q: unknown button %q (buttons %q)", action, name, buttons)
		}
		return uint8(i), nil
	}
	events := func(kinds []schema.SwitchEventKind, name string) ([]ButtonEvent, error) {
		i, err := index(name)
		if err != nil {
			return nil, err
		}
		out := make([]ButtonEvent, len(kinds))
		for j, k := range kinds {
			out[j] = ButtonEvent{Kind: k, Button: i}
		}
		return out, nil
	}
	for _, w := range actionWords {
		switch {
		case action == w.word:
			return events(w.kinds, "")
		case strings.HasSuffix(action, "_"+w.word):
			return events(w.kinds, strings.TrimSuffix(action, "_"+w.word))
		case strings.HasPrefix(action, w.word+"_"):
			return events(w.kinds, strings.TrimPrefix(action, w.word+"_"))
		}
	}
	if slices.Contains(buttons, action) {
		return events([]schema.SwitchEventKind{press, release}, action)
	}
	return nil, fmt.Errorf("unknown action %q", action)
}
