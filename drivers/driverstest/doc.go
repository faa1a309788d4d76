// Package driverstest is the conformance suite every driver backend
// passes: the simulator's hardware (package sim) and, later, the MQTT
// bridge. It builds the drivers of package drivers over a backend's
// hardware for the devices in Devices and checks each class through its
// Cap'n Proto interface, the way the kernel calls it.
//
// A backend's test:
//
//  1. implements Backend: the hardware of each device, a clock, and the
//     hooks that make the hardware do things (a sensor measures a value, a
//     button is pressed, the microphone hears a frame) or report what it
//     was told (a light's output, a lock's bolt);
//  2. calls Run(t, newBackend), which builds a fresh backend per subtest.
package driverstest
