// Package sim is the building simulator: topology generation, the world
// model (physics and people), and the device programs that run as real
// Cap'n Proto clients of a kernel.
//
// It talks to the kernel only over Cap'n Proto, like any device: it
// imports schema and internal/topology, never kernel or drivers. The world
// is also the simulated hardware behind the drivers of package drivers
// (its hardware types have the methods of the drivers' hardware
// interfaces); the wiring that puts world, drivers and an in-process
// kernel together lives in internal/simkernel and cmd/osmose.
//
// # The world
//
// World is a seeded state machine moved by Advance; nothing in it reads
// the wall clock or a global random source. Each room has:
//
//   - temperature: first order toward an equilibrium (outside temperature,
//     a daily sine; plus HeatGain while the thermostat heats, plus
//     PersonHeat per person) with time constant Tau, integrated exactly
//     (FirstOrder), so step size does not change the answer; the
//     thermostat switches the heating with a dead band around its setpoint;
//   - illuminance: daylight (a half sine between sunrise and sunset) plus
//     LightLux per light at its level;
//   - CO2: first order toward outdoor CO2 plus what the people breathe
//     out, diluted by the ventilation (time constant: one air change);
//   - occupancy: the people whose schedule puts them there.
//
// People (Person) draw a day from the seed: arrive 08:00-09:30, up to two
// meetings in other rooms, lunch out, leave 16:30-18:30; no one comes at
// weekends. The last one out of a room sometimes presses its switch; one
// entering an empty room sometimes long-presses it for full light.
// Sensors report when their value leaves a dead band or every Heartbeat,
// with Gaussian noise that is a hash of the seed, the device and the step.
//
// # Keys
//
// Generate makes a building whose every key derives from the seed (Key):
// the private key of id is the ed25519 key with seed
// SHA-256("osmose-sim-v1" || 0 || decimal seed || 0 || id). WriteTopology
// writes it with a header saying so. Policy is the default Cedar policy:
// device programs use their own room's devices, lights at most 80 %.
//
// # A run
//
//  1. Build the world (NewWorld) and, in process, a Clock the kernel and
//     the drivers read.
//  2. Run: start each device program in topology order (dial, log in,
//     open, subscribe); then for each step move the clock, Advance the
//     world and deliver its events one at a time through the drivers
//     (World.Fire), each returning only when the programs have reacted;
//     then stop the programs in order.
//  3. Read the Report: programs, events, calls, denials, latencies.
//
// Because every event is delivered to completion before the next, the
// kernel sees one total order fixed by the topology and the seed, and two
// runs write the same ledger (internal/simkernel tests it; the entries
// that end the sessions at the very end are the exception: the kernel
// records a hang-up as "logout" or "disconnect" depending on a race of its
// own). The price is throughput: one building is one sequence of calls.
package sim
