// Package kerneltest holds what tests, benchmarks and the simulator need
// to run a kernel without hardware: in-memory fake drivers for every device
// class (Light, Thermostat, Sensor, DoorLock, Display, Speaker, Microphone,
// Switch) that are real Cap'n Proto servers of the schema interfaces, a
// deterministic clock, a generated Building topology with deterministic
// test keys and a matching Cedar Policy, and client helpers (Dial, Login,
// Open) that do what any device program does.
//
// The fakes import only schema, like every driver. A test:
//
//  1. builds a topology (Building) and fakes for it (NewFakes);
//  2. passes Fakes.Drivers() as kernel.Config.Drivers;
//  3. connects as a device program (Dial, Login, Open) and calls;
//  4. reads the fakes' state (Light.State, Sensor.Subscribers) to check that
//     admitted calls reached the device and denied ones did not.
package kerneltest
