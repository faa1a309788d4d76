// Package topology is the building's topology file: the places of a site
// (site ⊃ building ⊃ floor ⊃ room ⊃ zone), the devices in them and the
// principals that may log in to the kernel. The kernel loads it at start
// (`osmose serve --topology FILE`); the simulator generates one and writes
// it with Write.
//
// # Format
//
// A topology file is YAML with three lists. Every key is optional except
// where noted; unknown keys are errors, so a typo never goes unnoticed.
//
//	places:                        # the containment tree, any order
//	  - path: cambridge            # required; segments joined by "/"
//	    kind: site                 # site, building, floor, room, zone, other
//	    label: Cambridge           # for people
//	  - path: cambridge/pembroke
//	    kind: building
//	  - path: cambridge/pembroke/f1
//	    kind: floor
//	  - path: cambridge/pembroke/f1/r12
//	    kind: room
//	    label: Room 12
//	devices:
//	  - path: cambridge/pembroke/f1/r12/light-3   # required: place path + one segment
//	    class: light               # required: a schema.DeviceClass name
//	    key: <base64 ed25519 public key>   # the device program's login key
//	    id: lobby-light            # optional second login id (default: the path)
//	    label: Light 3
//	principals:                    # everyone else who logs in
//	  - id: alice                  # required; no zero bytes or spaces
//	    kind: operator             # required: person, app, operator or auditor
//	    key: <base64 ed25519 public key>   # required
//	    label: Alice (operator)
//
// Rules, each checked with the file and line of the offending node: a path
// is non-empty segments without spaces joined by "/"; a place's parent (its
// path without the last segment) must be a declared place, unless the
// place is a root; a device's place must be a declared place; paths and
// principal ids are unique (a device's path and id are principal ids too);
// a key is the standard base64 encoding of a 32-byte ed25519 public key.
// A device without a key exists for grants but cannot log in.
//
// # Lifecycle
//
//  1. Load (a file) or Parse (bytes) validates and returns a *Topology, or an
//     *Error naming file, line and reason.
//  2. Read it: Places and Devices in file order, Place/Device/Principal by
//     path or id, Under for the devices at or under a place.
//  3. A generator builds a Topology value in Go and calls Write; Parse of
//     the output gives back an equal value.
package topology
