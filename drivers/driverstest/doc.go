// Package driverstest is the conformance suite every driver backend
// passes: the simulator's hardware (package sim) and the MQTT bridge
// (package drivers/mqtt, against real brokers). It builds the drivers of
// package drivers over a backend's hardware for the devices in Devices and
// checks each class through its Cap'n Proto interface, the way the kernel
// calls it.
//
// A backend's test:
//
//  1. implements Backend: the hardware of each device, a clock, and the
//     hooks that make the hardware do things (a sensor measures a value, a
//     button is pressed, the microphone hears a frame) or report what it
//     was told (a light's output, a lock's bolt). The event hooks return
//     only once the drivers have delivered the event, as the simulator's
//     synchronous hardware does; a backend whose events arrive on their
//     own goroutines (MQTT) waits for the delivery;
//  2. calls Run(t, newBackend), which builds a fresh backend per subtest.
package driverstest
