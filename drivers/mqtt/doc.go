// Package mqtt is the MQTT hardware backend of the drivers: it bridges the
// hardware interfaces of package drivers (LightHardware, SensorHardware,
// ...) to real devices behind an MQTT broker, speaking the topics and JSON
// of Zigbee2MQTT (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html)
// for the classes it covers and a small documented convention of the same
// shape for the classes it does not (display, speaker, microphone). It uses
// the MQTT 5 client github.com/eclipse/paho.golang (autopaho, which
// reconnects and resubscribes after the broker goes away). Like the
// simulator's hardware, it passes the conformance suite in
// drivers/driverstest.
//
// # Lifecycle
//
//  1. The wiring code (cmd/osmose) lists the devices to drive and calls
//     Dial with a Config naming the broker. Dial connects, subscribes to
//     every device's topics and returns once the broker has delivered the
//     retained states it holds (see "Connecting" below), or with an error
//     naming the broker when it cannot get there within
//     Config.ConnectTimeout.
//  2. drivers.NewSet(devices, bridge.Hardware, now) builds the drivers;
//     Hardware gives each device its hardware value.
//  3. The bridge runs: commands from the drivers go out on the devices'
//     /set topics and wait for the device to confirm them; state messages,
//     readings, button actions and audio frames come in and are handed to
//     the drivers.
//  4. Close disconnects and stops event delivery.
//
// # Names and topics
//
// A device's Zigbee2MQTT friendly name is its topology path, unchanged
// (FriendlyName): the light cambridge/pembroke/f1/r12/light-3 is the
// friendly name "cambridge/pembroke/f1/r12/light-3". Zigbee2MQTT allows
// slashes in friendly names and recommends them for grouping devices by
// place, so the place hierarchy appears in the topic tree. Config.Names
// overrides the name of a device already paired under another name (e.g.
// "0x00158d0001a2b3c4"). A name must be a valid Zigbee2MQTT friendly name:
// not empty, no empty segment, no MQTT wildcard (+ #), not ending in
// "/<digits>" (Zigbee2MQTT reads that as an endpoint) and not starting
// with the reserved segment "bridge". With B the base topic
// (Config.BaseTopic, default "zigbee2mqtt") and N the name, a device uses:
//
//	B/N               state, published by the device (JSON object)
//	B/N/set           commands, published by the bridge (JSON object, QoS 0)
//	B/N/availability  "online"/"offline" or {"state":"online"} (retained)
//	B/N/audio         microphones only: audio frames (binary)
//
// Two devices whose topics would coincide are refused by Dial.
//
// # Messages by class
//
// Zigbee2MQTT conventions (field names as Zigbee2MQTT exposes them):
//
//   - light: set {"state":"ON","brightness":B} or {"state":"OFF"}; B is
//     brightness 1..254, level percent L maps to B = round(L×254/100) and
//     back by round(B×100/254), which returns every L of 1..100 unchanged.
//   - thermostat: set {"occupied_heating_setpoint":22.5,"system_mode":"heat"}
//     (system_mode off, heat, cool, auto); the temperature the driver
//     reports is local_temperature from the state, NaN until the device
//     has sent one.
//   - occupancy, temperature, co2, illuminance sensors: the state fields
//     occupancy (true/false read as 1/0 people; a number, for a
//     people-counting sensor, as that many people), temperature (°C), co2
//     (ppm), illuminance_lux (lx; when absent, illuminance, which
//     Zigbee2MQTT 2.x reports in lux). Every live state message carrying
//     the field is one reading. A sensor reads NaN until its first report.
//   - door lock: set {"state":"LOCK"} or {"state":"UNLOCK"}; the door stands
//     open when the state's contact is false (Zigbee2MQTT's contact is true
//     when closed).
//   - switch: the state's action ("single", "hold", "release",
//     "on_press", "button_2_double", "single_left", ...). An action is a
//     button name and an event joined by "_" in either order. Events:
//     press → press; release, press_release, hold_release, long_release →
//     release; hold, long, long_press → longPress; single, click →
//     press+release; double and triple → two or three of those. An action
//     equal to a button name alone ("on", "off" of IKEA remotes) is a
//     click of that button. Config.Buttons names a switch's buttons in
//     order (button 0 first); a switch without names has one button, and
//     its actions carry no button part. An empty action (Zigbee2MQTT's
//     legacy reset) is ignored; an unknown one is logged and ignored.
//
// Classes Zigbee2MQTT has no convention for use the same topics, with a
// "transaction" string in every command that the device echoes in the
// state message answering it, together with either its new state or
// "error" (Zigbee2MQTT's own bridge requests answer the same way):
//
//   - display: set {"text":"Room free\n21 °C","transaction":"7"}; state
//     {"text":...}.
//   - speaker: set {"play":"chime"}, {"say":"hello"}, {"volume":70} or
//     {"stop":true}, each with a transaction; state {"volume":70,
//     "playing":false}. A sound the device lacks is answered with
//     {"transaction":"8","error":"not-exist: play: no sound \"gong\""}.
//   - microphone: every message on B/N/audio is one frame, its payload the
//     frame's bytes. The state's "audio" object announces the format:
//     {"audio":{"encoding":"pcm_s16le","sample_rate":16000,"channels":1}}
//     (encoding pcm_s16le or opus); until it has, the format is pcm_s16le,
//     16 kHz, mono.
//
// An error a device answers with that starts with "invalid: " or
// "not-exist: " reaches the caller as it is; any other is wrapped with the
// device's name.
//
// # Confirmation
//
// Every command waits for the device to confirm it: the first state
// message that arrives after the command was sent and after which the
// device's state (the merge of all its state messages, as Zigbee2MQTT
// keeps it) shows what was asked — state ON with brightness within one
// step of the one sent (or no brightness at all: a non-dimmable light),
// state OFF, LOCK or UNLOCK, a setpoint within 0.25 °C (a device that
// rounds to half degrees confirms) and the mode — or, for the
// transaction classes, the message echoing the transaction. Zigbee2MQTT
// publishes a device's state after every successful set, so a working
// device always confirms. Without confirmation within
// Config.CommandTimeout (default 5 s) the command fails with an error
// wrapping ErrUnconfirmed that names the device, the topic and what was
// sent. A device that has announced "offline" on its availability topic
// fails at once with ErrOffline, and so does a command waiting when it
// goes offline; a bridge without a broker connection fails at once with
// ErrNotConnected, naming the broker, and so does a command waiting when
// the connection drops. Commands to one device go out one at a time.
//
// Commands are published at QoS 0. The confirmation is the end-to-end
// acknowledgement, and a QoS 1 command is kept by the MQTT session and
// sent again after a reconnection, possibly long after its caller saw it
// fail: a door must not unlock minutes after the call to unlock it gave
// up. A command lost on its way simply goes unconfirmed.
//
// # Connecting
//
// Dial subscribes (QoS 1) to every device's topics and to a private topic,
// osmose/sync/<client id>, publishes one message there and waits until it
// comes back: the broker has then sent the retained states of the
// devices, so the drivers start from the devices' last known state and
// command none of them at start (the hardware implements the drivers'
// Reporter interfaces). (A broker with access control must let the bridge
// publish and subscribe there.) A lost connection is retried every Config.RetryDelay; on every
// new connection the bridge subscribes again, and Connected reports
// whether it is connected now.
//
// Mosquitto leaves Nagle's algorithm on unless its configuration says
// set_tcp_nodelay true; without it every confirmation costs about 40 ms
// more on loopback.
//
// # Incoming messages and events
//
// Messages are parsed on the MQTT client's goroutine, which never blocks:
// readings, button events and audio frames are queued per device and
// handed to the driver (which waits for every subscriber) by one
// goroutine per device while the queue is not empty, so events of one
// device arrive in order and a slow listener holds up only its own
// device. A queue holds at most 256 events; beyond that events are
// dropped and logged. Retained messages (the ones the broker replays on
// subscription) update the state and a sensor's last reading but raise
// no event: they are old news, and a replayed switch action would press a
// button twice.
//
// A message that is not a JSON object, or a field of the wrong type, is
// logged (Config.Logger, at warning level, with the device and topic) and
// ignored; the bridge carries on.
package mqtt
