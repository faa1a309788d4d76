package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/osmose-os/osmose"

// allowed lists, for each top-level package tree of ours, which of our other
// trees it may import. A tree not listed may import anything but cmd.
var allowed = map[string][]string{
	"schema":  {"internal"},
	"ledger":  {"internal"},
	"caps":    {"schema", "internal"},
	"drivers": {"schema", "internal"},
	"kernel":  {"schema", "caps", "ledger", "internal"},
	"sim":     {"schema", "internal"},
	"shell":   {"schema", "internal"},
}

type pkgInfo struct {
	hasDoc  bool
	hasCode bool
	imports map[string]bool
}

func scan(t *testing.T) map[string]*pkgInfo {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*pkgInfo{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.ImportsOnly)
		if err != nil {
			return err
		}
		p := pkgs[rel]
		if p == nil {
			p = &pkgInfo{imports: map[string]bool{}}
			pkgs[rel] = p
		}
		isTest := strings.HasSuffix(path, "_test.go")
		if !isTest {
			p.hasCode = true
			if f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package ") {
				p.hasDoc = true
			}
			if f.Name.Name == "main" && f.Doc != nil {
				p.hasDoc = true
			}
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(ip, module+"/") && !isTest {
				p.imports[strings.TrimPrefix(ip, module+"/")] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func top(rel string) string {
	return strings.Split(filepath.ToSlash(rel), "/")[0]
}

func TestEveryPackageHasDoc(t *testing.T) {
	for rel, p := range scan(t) {
		if p.hasCode && !p.hasDoc {
			t.Errorf("package %s has no package doc comment (add a doc.go)", rel)
		}
	}
}

func TestImportDirection(t *testing.T) {
	for rel, p := range scan(t) {
		from := top(rel)
		for imp := range p.imports {
			to := top(imp)
			if to == from {
				continue
			}
			if to == "cmd" {
				t.Errorf("%s imports %s: nothing imports cmd", rel, imp)
				continue
			}
			ok, listed := allowed[from]
			if !listed {
				continue
			}
			permitted := false
			for _, a := range ok {
				if a == to {
					permitted = true
				}
			}
			if !permitted {
				t.Errorf("%s imports %s: %s may import only %v of ours", rel, imp, from, ok)
			}
		}
	}
}
