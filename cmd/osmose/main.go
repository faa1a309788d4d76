package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/osmose-os/osmose/ledger"
)

// command is one (sub)command of the binary.
type command struct {
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a command may touch of the process: its streams. Commands
// take it instead of os.Stdout and friends so tests can run them in process.
type env struct {
	stdout, stderr io.Writer
}

// commands is the command table; a name with a space is a subcommand.
// Each entry's function lives in the file named after the command group
// (ledger.go for "ledger ...", and so on).
var commands = map[string]command{
	// One line per command, kept in alphabetical order.
	"bench kernel":      {summary: "measure gated, ledgered calls against a raw go-capnp echo server", run: runBenchKernel},
	"bench ledger":      {summary: "measure ledger append rate, durability latency and proofs against raw Badger", run: runBenchLedger},
	"bench replay":      {summary: "write a ledger with a real kernel, then measure replay's entries/s", run: runBenchReplay},
	"bench sim":         {summary: "run thousands of device programs against one kernel for a simulated hour: calls/s, latency, memory", run: runBenchSim},
	"caps who":          {summary: "list who holds live power over a device or place, and through which grants", run: runCapsWho},
	"caps why":          {summary: "show one grant's chain back to the policy: who made it, when, and how it ended", run: runCapsWhy},
	"demo":              {summary: "start a kernel, generate a building, simulate a working day, verify the ledger", run: runDemo},
	"forget":            {summary: "erase a data subject: bodies removed from disk, secret and mapping destroyed, a redaction signed", run: runForget},
	"ledger checkpoint": {summary: "print the newest signed checkpoint of a ledger", run: runLedgerCheckpoint},
	"ledger export":     {summary: "write a ledger as a CAR file for standard IPLD tools", run: runLedgerExport},
	"ledger proof":      {summary: "print and check the inclusion proof of an entry", run: runLedgerProof},
	"ledger show":       {summary: "print one ledger entry by seq or CID", run: runLedgerShow},
	"ledger tail":       {summary: "print the last ledger entries; -f follows", run: runLedgerTail},
	"ledger verify":     {summary: "check every envelope, body, tree hash and checkpoint of a ledger", run: runLedgerVerify},
	"people":            {summary: "list the data subjects (pseudonyms) on a ledger with their entry counts", run: runPeople},
	"replay":            {summary: "re-execute a ledger from genesis: every decision and driver result must come out the same", run: runReplay},
	"serve":             {summary: "run the kernel: Cap'n Proto RPC on Unix and TCP sockets, the ledger, the policy", run: runServe},
	"sim":               {summary: "run the building simulator's device programs and people against a running kernel", run: runSim},
	"state":             {summary: "the kernel's state after any entry: grants live, presence, sessions, devices", run: runState},
	"state diff":        {summary: "what changed between two entries: grants, presence, sessions, devices", run: runStateDiff},
	"topology gen":      {summary: "generate a building's topology file with device keys derived from a seed", run: runTopologyGen},
	"trace":             {summary: "list every call on a device, by a principal or under a grant, with decision and result", run: runTrace},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ledger.SyncProcs()
	os.Exit(runMain(ctx, &env{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
}

// errUsage marks an error in how the command was called; main prints it
// with a hint and exits 2.
var errUsage = errors.New("usage")

// exitError carries a specific exit code (e.g. verify's 1 for an unsound
// ledger) with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func runMain(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(e.stdout)
		return 0
	}
	name := args[0]
	rest := args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		if _, ok := commands[name+" "+rest[0]]; ok {
			name, rest = name+" "+rest[0], rest[1:]
		}
	}
	cmd, ok := commands[name]
	if !ok {
		if subs := subcommands(name); len(subs) > 0 {
			fmt.Fprintf(e.stderr, "osmose %s: needs a subcommand: %s\n", name, strings.Join(subs, ", "))
		} else {
			fmt.Fprintf(e.stderr, "osmose: unknown command %q (run `osmose help`)\n", name)
		}
		return 2
	}
	err := cmd.run(ctx, e, rest)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "osmose %s: %v (see `osmose %s --help`)\n", name, err, name)
		return 2
	case errors.As(err, &ee):
		fmt.Fprintf(e.stderr, "osmose %s: %v\n", name, ee.err)
		return ee.code
	default:
		fmt.Fprintf(e.stderr, "osmose %s: %v\n", name, err)
		return 1
	}
}

func subcommands(group string) []string {
	var out []string
	for n := range commands {
		if g, sub, ok := strings.Cut(n, " "); ok && g == group {
			out = append(out, sub)
		}
	}
	sort.Strings(out)
	return out
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "osmose: an operating-system shell for buildings\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-22s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `osmose <command> --help` for a command's flags.")
}

// newFlags returns a flag set for a command whose errors come back to the
// caller instead of exiting, with usage printed to e.stderr.
func newFlags(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: osmose %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a bad flag is a usage error (the flag package has
// already printed the usage).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	return nil
}
