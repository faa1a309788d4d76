// Package drivers holds one driver per device class of the schema: Light,
// Thermostat, Sensor (occupancy, temperature, CO2, illuminance), DoorLock,
// Display, Speaker, Microphone and Switch. Each driver is a Cap'n Proto
// server of its class's schema interface over a small hardware interface
// that this package declares (LightHardware, SensorHardware, ...). A
// backend implements the hardware: the simulator's world model (package
// sim), or the bridge to real devices over an MQTT broker with
// Zigbee2MQTT's conventions (package drivers/mqtt). Every backend passes
// the conformance suite in drivers/driverstest.
//
// Drivers know nothing of authority: they serve whoever holds their
// client, and the kernel is the only holder (kernel.Config.Drivers), which
// wraps each in its gates. A driver never looks anything up in a global
// table; it reaches exactly the hardware it was built with.
//
// # Lifecycle
//
//  1. The wiring code (cmd/osmose, a test harness) lists the devices
//     (Device: path and class) and asks NewSet for their drivers, giving a
//     function that returns each device's hardware and the clock whose
//     time stamps readings and states.
//  2. Set.Clients returns one capnp client per device for
//     kernel.Config.Drivers, which takes ownership.
//  3. Hardware that produces events (sensors, switches, microphones) was
//     handed a function by the driver (the Watch methods); the backend
//     calls it with each new reading, button event or audio frame, and it
//     returns once every subscriber has been told. Delivery is therefore
//     synchronous and in subscription order, which keeps a simulated
//     building deterministic.
//
// # Errors
//
// Errors start with the schema's error kinds ("invalid: setLevel: level
// 120 above 100", "not-exist: play: no sound \"gong\""), so the kernel
// passes them to the caller unchanged. A hardware error that already
// starts with a kind is passed on as it is; any other is prefixed with the
// device class.
package drivers
