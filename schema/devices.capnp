# devices.capnp — the device classes of a building, as interfaces a device
# program calls. A program never reaches a device directly: every
# capability below is a kernel gate obtained from Session.open.
#
# Units: percentages are 0..100, temperatures degrees Celsius, times logical
# nanoseconds (see doc.go).

@0xa1addab1fa682f77;

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/osmose-os/osmose/schema");

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("osmose::schema");

enum DeviceClass {
  # The class of a device, which decides the interface its capability has.

  other @0;
  # A device of a class these schemas do not name.

  light @1;
  # Interface Light.

  thermostat @2;
  # Interface Thermostat.

  occupancy @3;
  # Interface Sensor; readings of kind occupancy.

  temperature @4;
  # Interface Sensor; readings of kind temperature.

  co2 @5;
  # Interface Sensor; readings of kind co2.

  illuminance @6;
  # Interface Sensor; readings of kind illuminance.

  doorLock @7;
  # Interface DoorLock.

  display @8;
  # Interface Display.

  speaker @9;
  # Interface Speaker.

  microphone @10;
  # Interface Microphone.

  switch @11;
  # Interface Switch (wall switches and push buttons).
}

interface Subscription {
  # A running subscription or stream (sensor readings, switch events,
  # recordings, the ledger tail). Cancelling it, or releasing the last
  # reference to it, stops the deliveries; the listener gets no further
  # calls once cancel returns.

  cancel @0 () -> ();
}

# ---------------------------------------------------------------- Light

interface Light {
  # A dimmable or on/off luminaire.

  set @0 (on :Bool) -> ();
  # Switches the light on or off. Switching on restores the last non-zero
  # level (100 % if there is none).

  setLevel @1 (level :UInt8) -> ();
  # Sets the brightness in percent, 0..100; 0 switches the light off, any
  # other value switches it on. A non-dimmable light treats 1..100 as on.
  # Error "invalid" above 100.

  state @2 () -> (state :LightState);
  # The light's current state.
}

struct LightState {
  on @0 :Bool;

  level @1 :UInt8;
  # Brightness in percent, 0..100 (the level it has, or would have, when on).

  time @2 :Int64;
  # When the state was last changed, logical nanoseconds.
}

# ---------------------------------------------------------------- Thermostat

enum ThermostatMode {
  off @0;
  # Neither heating nor cooling.

  heat @1;
  # Heat towards the setpoint.

  cool @2;
  # Cool towards the setpoint.

  auto @3;
  # Heat or cool as needed to hold the setpoint.
}

interface Thermostat {
  # A room's heating/cooling controller.

  setSetpoint @0 (celsius :Float64) -> ();
  # Sets the target temperature in °C. Error "invalid" outside the device's
  # range (typically 5..35 °C).

  setMode @1 (mode :ThermostatMode) -> ();
  # Sets the operating mode.

  state @2 () -> (state :ThermostatState);
  # The measured temperature, setpoint and mode.
}

struct ThermostatState {
  temperature @0 :Float64;
  # The measured room temperature in °C.

  setpoint @1 :Float64;
  # The target temperature in °C.

  mode @2 :ThermostatMode;

  time @3 :Int64;
  # When the temperature was measured, logical nanoseconds.
}

# ---------------------------------------------------------------- Sensors

enum ReadingKind {
  # What a Reading measures, and so its unit.

  other @0;
  # Unit as given in Reading.unit.

  occupancy @1;
  # Number of people detected (unit "people"); a presence-only sensor
  # reports 0 (vacant) or 1 (occupied).

  temperature @2;
  # Degrees Celsius (unit "°C").

  co2 @3;
  # Carbon dioxide concentration, parts per million (unit "ppm").

  illuminance @4;
  # Illuminance in lux (unit "lx").
}

struct Reading {
  # One measurement by a sensor.

  kind @0 :ReadingKind;

  value @1 :Float64;
  # The measured value, in `unit`.

  unit @2 :Text;
  # The unit: "people", "°C", "ppm" or "lx" for the kinds above.

  time @3 :Int64;
  # When it was measured, logical nanoseconds.

  device @4 :Text;
  # The device path of the sensor that measured it, so one listener can
  # serve several sensors.
}

interface Sensor {
  # An occupancy, temperature, CO2 or illuminance sensor.

  read @0 () -> (reading :Reading);
  # The latest reading.

  subscribe @1 (listener :ReadingListener) -> (subscription :Subscription);
  # Calls listener.reading for every new reading until the subscription is
  # cancelled or released, or the grant ends. The caller keeps ownership of
  # `listener`; the kernel holds its own reference while subscribed.
}

interface ReadingListener {
  # Implemented by a program that subscribes to a sensor.

  reading @0 (reading :Reading) -> ();
  # A new reading. The kernel has at most one call outstanding per
  # subscription: readings that arrive meanwhile are coalesced, and the
  # listener gets the latest one when it returns.
}

# ---------------------------------------------------------------- Door lock

interface DoorLock {
  # An electric door lock.

  lock @0 () -> ();
  # Locks the door (at once if closed, on closing otherwise).

  unlock @1 () -> ();
  # Unlocks the door until lock is called.

  unlockFor @2 (seconds :UInt32) -> ();
  # Unlocks the door and locks it again after `seconds` (1..3600). Error
  # "invalid" for 0 or more than an hour.

  state @3 () -> (state :LockState);
  # Whether the door is locked and whether it is open.
}

struct LockState {
  locked @0 :Bool;

  open @1 :Bool;
  # The door is open (door-position sensor); false if the lock has none.

  relockAt @2 :Int64;
  # When a pending unlockFor locks again, logical nanoseconds; 0 if none.

  time @3 :Int64;
  # When the state last changed, logical nanoseconds.
}

# ---------------------------------------------------------------- Display

interface Display {
  # A text display: a room-booking panel, a door sign.

  show @0 (text :Text) -> ();
  # Replaces what the display shows with `text` (UTF-8; lines separated by
  # "\n"). Text longer than the display holds is cut off.

  clear @1 () -> ();
  # Blanks the display.

  content @2 () -> (text :Text);
  # The text on display now; empty when clear.
}

# ---------------------------------------------------------------- Speaker

interface Speaker {
  # A loudspeaker.

  play @0 (sound :Text) -> ();
  # Plays one of the device's built-in sounds by name ("chime", "alarm",
  # ...). Error "not-exist" for a name the device lacks.

  say @1 (text :Text) -> ();
  # Speaks `text` by speech synthesis.

  setVolume @2 (volume :UInt8) -> ();
  # Sets the volume in percent, 0..100. Error "invalid" above 100.

  stop @3 () -> ();
  # Stops whatever is playing.

  state @4 () -> (state :SpeakerState);
}

struct SpeakerState {
  volume @0 :UInt8;
  # Volume in percent, 0..100.

  playing @1 :Bool;
  # Something is playing or being said now.
}

# ---------------------------------------------------------------- Microphone

enum AudioEncoding {
  pcmS16le @0;
  # Raw PCM, signed 16-bit little-endian samples, channels interleaved.

  opus @1;
  # One Opus packet per frame (RFC 6716).
}

struct AudioFormat {
  encoding @0 :AudioEncoding;

  sampleRate @1 :UInt32;
  # Samples per second per channel, e.g. 16000.

  channels @2 :UInt8;
  # 1 = mono.
}

interface Microphone {
  # A microphone. Audio is personal data: the kernel stores it under the
  # data subjects present, and it is erased with them.

  format @0 () -> (format :AudioFormat);
  # The format record will deliver.

  record @1 (sink :AudioSink) -> (format :AudioFormat, recording :Subscription);
  # Starts sending audio frames to `sink` until the recording is cancelled or
  # released, or the grant ends (e.g. a presence-bound grant when a person
  # leaves). Then sink.done is called once. The caller keeps ownership of
  # `sink`; the kernel holds its own reference while recording.
}

interface AudioSink {
  # Receives a flow-controlled stream of audio. Implemented by the program
  # that records.

  write @0 (frame :Data) -> stream;
  # One frame of audio in the format record returned (typically 20 ms).
  # A streaming call: the sender keeps a bounded window of frames in flight,
  # so a slow sink slows the sender instead of filling memory. Frames may be
  # dropped at the device if the sink cannot keep up.

  done @1 () -> ();
  # The stream has ended; no write follows.
}

# ---------------------------------------------------------------- Switch

enum SwitchEventKind {
  press @0;
  # The button went down.

  release @1;
  # The button came up.

  longPress @2;
  # The button has been held down for the device's long-press time
  # (typically 1 s); sent in addition to press and release.
}

struct SwitchEvent {
  kind @0 :SwitchEventKind;

  button @1 :UInt8;
  # Which button of a multi-button panel, from 0.

  time @2 :Int64;
  # When it happened, logical nanoseconds.

  device @3 :Text;
  # The device path of the switch.
}

interface Switch {
  # A wall switch or push button. It only reports; what a press does is up
  # to the program that listens.

  subscribe @0 (listener :SwitchListener) -> (subscription :Subscription);
  # Calls listener.event for every press, release and long press until the
  # subscription is cancelled or released, or the grant ends. Events are
  # never coalesced. The caller keeps ownership of `listener`.

  pressed @1 () -> (buttons :List(Bool));
  # Which buttons are held down now, indexed by button number.
}

interface SwitchListener {
  # Implemented by a program that listens to a switch.

  event @0 (event :SwitchEvent) -> ();
  # One switch event, delivered in order.
}
