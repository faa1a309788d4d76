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
//     policy; each device program's connection is an in-memory pipe served
//     by Kernel.ServeConn;
//  4. runs sim.Run, closes the kernel and the ledger, reopens the ledger
//     read-only from disk, verifies it (ledger.Verify) and counts its
//     entries by kind and decision.
//
// Every input of the kernel (time, nonces, pseudonyms, the order of
// connections and calls) comes from the seed, so two runs with the same
// seed and topology write the same ledger (see the determinism test).
package simkernel
