#!/bin/sh
# gen.sh regenerates the Go code for this directory's Cap'n Proto schemas.
# `go generate ./schema` runs it from this directory (see generate.go).
#
# It needs only Go and the capnp compiler (Debian's `capnproto` package):
# capnpc-go is built from the go-capnp version that go.mod requires, and the
# go-capnp standard schemas (go.capnp, capnp/c++.capnp, capnp/stream.capnp)
# come from that module's directory. --no-standard-import keeps the
# system's copies of capnp/*.capnp, which lack the $Go annotations, out of
# the way, so the output depends only on the repository, capnp and Go.
set -eu

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

go build -o "$tmp/capnpc-go" capnproto.org/go/capnp/v3/capnpc-go
std="$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std"

rm -f -- *.capnp.go
capnp compile --no-standard-import -I"$std" -o"$tmp/capnpc-go:." -- *.capnp
