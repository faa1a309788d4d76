package schema

// Regenerate the *.capnp.go files from the schemas; see gen.sh.
//go:generate sh gen.sh
