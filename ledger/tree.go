package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is the height of the hash tiles the tree is stored in: a tile
// holds up to 256 hashes of one level; the 7 levels above them are
// recomputed from the tile when needed (see golang.org/x/mod/sumdb/tlog).
const tileHeight = 8

const tileWidth = 1 << tileHeight

// leafHash is the RFC 6962 leaf hash of the entry whose envelope has CID c:
// the tree's leaves are envelope CIDs in binary form.
func leafHash(cidBytes []byte) tlog.Hash { return tlog.RecordHash(cidBytes) }

// treeBuilder is the pure, in-memory right edge of the tree: the newest hash
// of every level and the newest (possibly partial) tile of every tile level.
// Appending a leaf computes its stored hashes as RFC 6962 does, with no I/O.
type treeBuilder struct {
	size  int64
	edge  []edgeHash   // edge[level]: the newest hash at that level
	tiles []*openTile  // tiles[L]: the newest tile at tile level L
	dirty map[int]bool // tile levels whose newest tile changed since takeDirty
	full  []dirtyTile  // tiles completed since takeDirty
}

type edgeHash struct {
	n int64 // index within the level
	h tlog.Hash
}

type openTile struct {
	n       int64  // tile index within its tile level
	data    []byte // W*32 bytes; never rewritten in place, only appended to
	written int    // bytes of data already handed out by takeDirty
}

func newTreeBuilder() *treeBuilder {
	return &treeBuilder{dirty: map[int]bool{}}
}

// append adds the leaf with hash h as record b.size.
func (b *treeBuilder) append(h tlog.Hash) {
	n := b.size
	level := 0
	for n&1 == 1 {
		left := b.edge[level]
		if left.n != n-1 {
			panic(fmt.Sprintf("ledger: tree edge at level %d holds %d, want %d", level, left.n, n-1))
		}
		b.put(level, n, h)
		h = tlog.NodeHash(left.h, h)
		level++
		n >>= 1
	}
	b.put(level, n, h)
	b.size++
}

func (b *treeBuilder) put(level int, n int64, h tlog.Hash) {
	for len(b.edge) <= level {
		b.edge = append(b.edge, edgeHash{n: -1})
	}
	b.edge[level] = edgeHash{n, h}
	if level%tileHeight != 0 {
		return
	}
	L := level / tileHeight
	for len(b.tiles) <= L {
		b.tiles = append(b.tiles, nil)
	}
	t := b.tiles[L]
	if t == nil || t.n != n/tileWidth {
		if t != nil && b.dirty[L] {
			b.full = append(b.full, dirtyTile{L, t.n, t.data, t.written})
		}
		t = &openTile{n: n / tileWidth, data: make([]byte, 0, tileWidth*tlog.HashSize)}
		b.tiles[L] = t
	}
	if int64(len(t.data)/tlog.HashSize) != n%tileWidth {
		panic(fmt.Sprintf("ledger: tile %d/%d holds %d hashes, appending #%d", L, t.n, len(t.data)/tlog.HashSize, n%tileWidth))
	}
	t.data = append(t.data, h[:]...)
	b.dirty[L] = true
}

// root returns the tree hash of the current size, from the edge alone.
func (b *treeBuilder) root() (tlog.Hash, error) {
	if b.size == 0 {
		return tlog.Hash{}, nil
	}
	return tlog.TreeHash(b.size, b)
}

// ReadHashes lets tlog read edge hashes; it serves exactly the hashes that
// TreeHash at the builder's size needs.
func (b *treeBuilder) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		level, n := tlog.SplitStoredHashIndex(idx)
		if level >= len(b.edge) || b.edge[level].n != n {
			return nil, fmt.Errorf("ledger: hash %d/%d is not on the tree's edge", level, n)
		}
		out[i] = b.edge[level].h
	}
	return out, nil
}

// dirtyTile is a tile to write: its key and data.
type dirtyTile struct {
	level int
	n     int64
	data  []byte // the tile's hashes so far
	from  int    // bytes of data written before: data[from:] is new
}

// full reports whether the tile holds all its hashes.
func (t dirtyTile) full() bool { return len(t.data) == tileWidth*tlog.HashSize }

// put returns the store write of a changed tile: a full tile under its
// key, once; a partial one as a piece holding only its new hashes, so a
// quiet ledger writes 32 bytes per entry, not the whole tile every batch.
func (t dirtyTile) put() kv {
	if t.full() {
		return kv{tileKey(t.level, t.n), t.data}
	}
	return kv{tilePieceKey(t.level, t.n, t.from/tlog.HashSize), t.data[t.from:]}
}

// takeDirty returns the tiles changed since the last call. The data slices
// stay valid: tiles are only ever appended to.
func (b *treeBuilder) takeDirty() []dirtyTile {
	out := b.full
	b.full = nil
	for L := range b.tiles {
		if !b.dirty[L] {
			continue
		}
		t := b.tiles[L]
		out = append(out, dirtyTile{L, t.n, t.data[:len(t.data):len(t.data)], t.written})
		t.written = len(t.data)
		delete(b.dirty, L)
	}
	return out
}

// restoreTreeBuilder rebuilds the right edge of a tree of the given size
// from its stored tiles.
func restoreTreeBuilder(size int64, r tlog.HashReader, tiles func(L int, n int64) ([]byte, error)) (*treeBuilder, error) {
	b := newTreeBuilder()
	b.size = size
	if size == 0 {
		return b, nil
	}
	for level := 0; size>>uint(level) > 0; level++ {
		n := size>>uint(level) - 1
		hs, err := r.ReadHashes([]int64{tlog.StoredHashIndex(level, n)})
		if err != nil {
			return nil, err
		}
		for len(b.edge) <= level {
			b.edge = append(b.edge, edgeHash{n: -1})
		}
		b.edge[level] = edgeHash{n, hs[0]}
		if level%tileHeight == 0 {
			L := level / tileHeight
			tn := n / tileWidth
			data, err := tiles(L, tn)
			if err != nil {
				return nil, err
			}
			w := int(n%tileWidth + 1)
			if len(data) < w*tlog.HashSize {
				return nil, fmt.Errorf("ledger: tile %d/%d has %d hashes, want %d", L, tn, len(data)/tlog.HashSize, w)
			}
			buf := make([]byte, w*tlog.HashSize, tileWidth*tlog.HashSize)
			copy(buf, data)
			for len(b.tiles) <= L {
				b.tiles = append(b.tiles, nil)
			}
			b.tiles[L] = &openTile{n: tn, data: buf, written: len(buf)}
		}
	}
	return b, nil
}

func tileKey(L int, n int64) ds.Key {
	return ds.RawKey(fmt.Sprintf("/t/%d/%012x", L, n))
}

// tilePieceKey names the hashes of a partial tile from the start-th on.
// A tile that is not yet full is the concatenation of its pieces.
func tilePieceKey(L int, n int64, start int) ds.Key {
	return ds.RawKey(fmt.Sprintf("/t/%d/%012x/%03x", L, n, start))
}

// tileStore reads stored tiles and serves tree hashes from them, caching
// full tiles (which never change).
type tileStore struct {
	store ds.Read
	mu    sync.Mutex
	full  map[[2]int64][]byte
	order [][2]int64
}

const tileCacheSize = 4096 // full tiles, 8 KiB each: 32 MiB at most

func newTileStore(s ds.Read) *tileStore {
	return &tileStore{store: s, full: map[[2]int64][]byte{}}
}

func (ts *tileStore) tile(L int, n int64) ([]byte, error) {
	k := [2]int64{int64(L), n}
	ts.mu.Lock()
	data, ok := ts.full[k]
	ts.mu.Unlock()
	if ok {
		return data, nil
	}
	data, err := ts.store.Get(context.Background(), tileKey(L, n))
	if errors.Is(err, ds.ErrNotFound) {
		data, err = ts.pieces(L, n)
	}
	if err != nil {
		return nil, fmt.Errorf("read tile %d/%d: %w", L, n, err)
	}
	if len(data)%tlog.HashSize != 0 || len(data) == 0 || len(data) > tileWidth*tlog.HashSize {
		return nil, fmt.Errorf("%w: tile %d/%d has %d bytes", ErrCorrupt, L, n, len(data))
	}
	if len(data) == tileWidth*tlog.HashSize {
		ts.mu.Lock()
		if len(ts.order) >= tileCacheSize {
			delete(ts.full, ts.order[0])
			ts.order = ts.order[1:]
		}
		ts.full[k] = data
		ts.order = append(ts.order, k)
		ts.mu.Unlock()
	}
	return data, nil
}

// pieces reads a partial tile from its pieces, which must follow one
// another from the tile's first hash.
func (ts *tileStore) pieces(L int, n int64) ([]byte, error) {
	var data []byte
	prefix := tileKey(L, n).String()
	err := queryPrefix(context.Background(), ts.store, prefix, false, func(key string, v []byte) (bool, error) {
		start, err := strconv.ParseUint(key[len(prefix)+1:], 16, 16)
		if err != nil || int(start)*tlog.HashSize != len(data) || len(v)%tlog.HashSize != 0 {
			return false, fmt.Errorf("%w: tile %d/%d: piece %s does not follow its %d hashes", ErrCorrupt, L, n, key, len(data)/tlog.HashSize)
		}
		data = append(data, v...)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: tile %d/%d missing", ErrCorrupt, L, n)
	}
	return data, nil
}

// ReadHashes implements tlog.HashReader over the stored tiles.
func (ts *tileStore) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		t := tlog.TileForIndex(tileHeight, idx)
		data, err := ts.tile(t.L, t.N)
		if err != nil {
			return nil, err
		}
		stored := t
		stored.W = len(data) / tlog.HashSize
		if stored.W < t.W {
			return nil, fmt.Errorf("%w: tile %d/%d has %d hashes, need %d", ErrCorrupt, t.L, t.N, stored.W, t.W)
		}
		h, err := tlog.HashFromTile(stored, data, idx)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		out[i] = h
	}
	return out, nil
}
