// Package sim is the building simulator: topology generation, the world
// model (physics and people), the device programs, the door-badge bridge
// and the people's own sessions, all real Cap'n Proto clients of a
// kernel, and the faults a run can inject.
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
// People (Person, known by pseudonyms "p-0001".., PersonID) draw a day
// from the seed: arrive 08:00-09:30, up to two meetings in other rooms,
// lunch out, leave 16:30-18:30; no one comes at weekends. Every move
// through a door is a door badge's event (Event.Person): leaving the old
// room, entering the new one. The last one out of a room sometimes
// presses its switch; one entering an empty room sometimes long-presses it
// for full light. Sensors report when their value leaves a dead band or
// every Heartbeat, with Gaussian noise that is a hash of the seed, the
// device and the step.
//
// # Keys and principals
//
// Generate makes a building whose every key derives from the seed (Key):
// the private key of id is the ed25519 key with seed
// SHA-256("osmose-sim-v1" || 0 || decimal seed || 0 || id). Besides the
// devices it declares an operator "op", an auditor "audit", the door-badge
// bridge "badges" (BadgesID) and GenConfig.People persons "p-0001"..
// WriteTopology writes it with a header saying so. The bridge is of kind
// operator because Operator.presence is reached through Session.operator,
// which the kernel gives to operators only, and the schema has no
// narrower kind; the policy gives it no device.
//
// Policy is the default Cedar policy: device programs use their own
// room's devices, lights at most 80 %; a person uses the lights (at most
// 80 %) and the display of the room they are in, by grants bound to their
// presence there (@presence("room")); the operator everything, the
// bridge nothing.
//
// # Presence
//
// The bridge logs in as "badges", takes the Operator capability and
// reports each door badge event, in the world's order, with
// Operator.presence: the kernel records a "presence" entry and, when a
// person leaves, revokes every grant bound to their presence there (a
// "revoke" entry). A person whose key derives from the seed logs in the
// first time they want something; on entering a room they open its
// lights half the time (a presence-bound grant per light), read the first
// and set them to their preferred level if it is off or another level.
// Leaving, they drop the capabilities the kernel has just revoked.
//
// # Faults
//
// Config.Faults (osmose sim and osmose demo --faults LIST; ParseFaults)
// switches faults on per run. Which devices, at which steps and for how
// long is drawn from the seed, the topology and the run's length before
// the run starts (each device suffers one fault at most), so the same
// seed, topology, duration and list inject the same faults:
//
//	crash      a device program's connection dies without a word (the
//	           kernel records a "disconnect"); 5-45 min later the program
//	           restarts from scratch: dials, logs in, opens, subscribes
//	drop       the network drops a program's connection; it reconnects at
//	           once, keeping its state
//	slow       a light's or display's hardware answers each request 2-20
//	           ms late (real time, WorldConfig.Sleep) for 30-120 min
//	stuck      a sensor keeps reporting the value it last reported, on its
//	           heartbeat, for 30-180 min (World.Freeze)
//	skew       an occupancy or display program's clock is 3-20 min off for
//	           the whole run: the display stamps the wrong time, the
//	           lights-off timer fires early or late
//	malicious  a sensor's program attacks at spread steps, in turn:
//	           opens a device of another room; calls a Light method on its
//	           sensor's gate and asks for the operator interface; replays
//	           a released grant's gate and its own used login; floods its
//	           sensor with more reads than the kernel's in-flight bound
//	           ("overloaded"); and sends garbage, an oversized frame, a
//	           call on a capability it was never given, or a frame that is
//	           not an rpc message on a new connection
//
// Crashes and drops spare switch programs: the harness waits after a
// crash until the drivers have dropped the dead program's subscriptions,
// which it can count for sensors only. The Report counts what the faults
// did (FaultReport).
//
// # A run
//
//  1. Build the world (NewWorld) and, in process, a Clock the kernel and
//     the drivers read.
//  2. Run: start each device program in topology order (dial, log in,
//     open, subscribe), then the bridge; then for each step move the
//     clock, inject the step's faults, Advance the world, report its door
//     badges and deliver its readings one at a time through the drivers
//     (World.Fire), each returning only when the programs have reacted;
//     let the people who came in use their rooms; run the step's attacks;
//     then stop the programs, the people and the bridge in order, each
//     logging out (Config.Settle).
//  3. Read the Report: programs, events, calls, denials, latencies,
//     presence, faults.
//
// # Determinism
//
// Because every event, report, fault and attack is carried out to
// completion before the next, and every connection's end is settled
// (Config.Settle: the kernel's entry for it written, the connection let
// go, its subscriptions dropped) before anything else happens, the kernel
// sees one total order fixed by the topology, the seed and the fault list,
// and two runs in one process (internal/simkernel) write the same ledger
// byte for byte, the sessions' ends included. Two faults would be racy
// and are made deterministic: a flood's split between admitted and
// "overloaded" calls (Config.Hardware: the flooded sensor's answers are
// held until the last call is refused, then let go one at a time), and a
// hostile connection's end (the harness waits for the kernel's entry, and
// gives the kernel a pipe that fails as a socket does). Slow devices
// change only how long calls take. Against a kernel in another process
// (osmose sim --connect) none of this holds: there the flood's split and
// the timing of everything depend on the scheduler. The price of
// determinism is throughput: one building is one sequence of calls.
package sim
