// Package main is the osmose command, the one binary of the project: the
// kernel, the simulator and demo, and the auditor's tools. Every wiring
// decision (which store, which drivers, which policy) is made here, in the
// open.
//
// Usage:
//
//	osmose <command> [subcommand] [flags]
//
// Run `osmose help` for the list of commands, and `osmose <command> --help`
// for one command's flags.
package main
