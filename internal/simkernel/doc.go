// Package simkernel runs a kernel and the building simulator in one
// process: the harness behind `osmose demo` and the simulator's end-to-end
// and determinism tests. It is the one place that wires sim's world model
// (as the drivers' hardware), the drivers, a kernel on a Badger ledger and
// the device programs together; sim itself reaches the kernel only over
// Cap'n Proto, like any device.
//
// Run:
//
//  1. builds the world (sim.NewWorld) and a sim.Clock at Options.Start;
//  2. builds a driver for every device over the world's hardware
//     (drivers.NewSet);
//  3. opens the ledger in DIR/ledger with the kernel key derived from the
//     seed (written to DIR/kernel.key, as `osmose serve` keeps it), and
//     starts kernel.New with the sim clock, seeded randomness and the
//     policy; each program's connection (devices, the door-badge bridge,
//     people, the malicious program's hostile connections) is an
//     in-memory pipe served by Kernel.ServeConn;
//  4. runs sim.Run with Options.Faults, settling every connection's end
//     (sim.Config.Settle: wait for the kernel's entry, for ServeConn to
//     return, and for the sensor drivers to drop the connection's
//     subscriptions), closes the kernel and the ledger, reopens the
//     ledger read-only from disk, verifies it (ledger.Verify) and counts
//     its entries by kind and decision.
//
// Every input of the kernel (time, nonces, pseudonyms, the order of
// connections, calls and faults) comes from the seed, so two runs with the
// same seed, topology and fault list write the same ledger, byte for
// byte, to the last logout (see TestDeterministic and TestFaults).
package simkernel
