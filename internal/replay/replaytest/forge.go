package replaytest

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/osmose-os/osmose/ledger"
)

// Forge writes into the data directory dst a copy of the ledger of the
// data directory src, entry by entry, with src's kernel key and origin,
// applying change to the entry at seq: a sound, signed ledger (verify
// passes) that differs from src in that one entry (and, through the prev
// chain, in every envelope CID after it). This is what a forger holding
// the kernel's key could write; replay must catch it at seq.
//
// Personal entries are copied under new pseudonyms of the same people
// (the person is read from a presence entry's body or a login's actor).
// An entry whose personal body was erased cannot be copied: the copy
// ends before the first such entry after seq (and Forge fails if one
// comes before seq).
func Forge(ctx context.Context, src, dst string, seq uint64, change func(*ledger.Entry) error) error {
	return forge(ctx, src, dst, seq, func(s uint64, e *ledger.Entry) error {
		if s == seq {
			return change(e)
		}
		return nil
	})
}

// ForgeAll is Forge with change called for every entry but the genesis,
// with its seq; it fails at an entry whose personal body was erased.
func ForgeAll(ctx context.Context, src, dst string, change func(uint64, *ledger.Entry) error) error {
	return forge(ctx, src, dst, ^uint64(0), change)
}

func forge(ctx context.Context, src, dst string, upTo uint64, change func(uint64, *ledger.Entry) error) error {
	seed, err := os.ReadFile(filepath.Join(src, "kernel.key"))
	if err != nil {
		return err
	}
	if len(seed) != ed25519.SeedSize {
		return fmt.Errorf("%s/kernel.key: %d bytes, want a %d-byte seed", src, len(seed), ed25519.SeedSize)
	}
	key := ed25519.NewKeyFromSeed(seed)
	ss, err := ledger.OpenBadger(filepath.Join(src, "ledger"), ledger.BadgerOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer ss.Close()
	from, err := ledger.Open(ctx, ss, ledger.Options{})
	if err != nil {
		return err
	}
	defer from.Close()
	g, err := from.Read(ctx, 0)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dst, "kernel.key"), seed, 0o600); err != nil {
		return err
	}
	ds, err := ledger.OpenBadger(filepath.Join(dst, "ledger"), ledger.BadgerOptions{})
	if err != nil {
		return err
	}
	defer ds.Close()
	to, err := ledger.Open(ctx, ds, ledger.Options{Key: key, Origin: from.Meta().Origin, GenesisTime: g.Envelope.Time})
	if err != nil {
		return err
	}
	pseudonyms := map[string]string{}
	var last *ledger.Pending
	for s := uint64(1); s < uint64(from.Size()); s++ {
		r, err := from.Read(ctx, s)
		if err != nil {
			to.Close()
			return err
		}
		env := r.Envelope
		if env.Subject != "" && (env.Params.Defined() && r.ParamsBlock == nil || env.Result.Defined() && r.ResultBlock == nil) {
			if s > upTo {
				break // erased: the copy ends here
			}
			to.Close()
			return fmt.Errorf("seq %d: its personal bodies were erased: it cannot be copied", s)
		}
		e := ledger.Entry{Kind: env.Kind, Actor: env.Actor, Grant: env.Grant, Device: env.Device, Interface: env.Interface,
			Method: env.Method, Decision: env.Decision, Reason: env.Reason, Ref: env.Ref, Time: env.Time,
			Params: r.Params(), Result: r.Result()}
		if env.Subject != "" {
			p, ok := pseudonyms[env.Subject]
			if !ok {
				// The person: a presence body's, or a login's actor.
				var body struct {
					Person string `json:"person"`
				}
				person := env.Actor
				if env.Kind != ledger.KindLogin {
					if err := json.Unmarshal(e.Params, &body); err != nil || body.Person == "" {
						to.Close()
						return fmt.Errorf("seq %d: a personal entry whose person is not in its body", s)
					}
					person = body.Person
				}
				if p, err = to.Pseudonym(ctx, person); err != nil {
					to.Close()
					return err
				}
				pseudonyms[env.Subject] = p
			}
			e.Subject = p
		}
		if err := change(s, &e); err != nil {
			to.Close()
			return fmt.Errorf("change seq %d: %w", s, err)
		}
		if last, err = to.Append(ctx, e); err != nil {
			to.Close()
			return fmt.Errorf("append seq %d: %w", s, err)
		}
	}
	if last != nil {
		if err := last.Wait(ctx); err != nil {
			to.Close()
			return err
		}
	}
	return to.Close()
}
