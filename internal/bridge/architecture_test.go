package bridge

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sds-bridge/sds-bridge/"

// goPackage is one package of this module as `go list` sees it: its own
// imports and every package it links.
type goPackage struct {
	imports, deps []string
}

// modulePackages lists the module's packages with their imports and deps.
func modulePackages(t *testing.T) map[string]goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", module+"...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]goPackage{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "|", 3)
		if len(parts) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		pkgs[strings.TrimPrefix(parts[0], module)] = goPackage{strings.Fields(parts[1]), strings.Fields(parts[2])}
	}
	return pkgs
}

// TestImportRules keeps the package graph docs/architecture.md draws: data
// flows one way, sds and the folders never import each other (the JWT
// writer takes filesink's atomic single file), pgx only through
// reload/pgreload, and no go-control-plane server or cache in the daemon.
// Inside filesink, TestTheFolderReaderDoesNotUseTheWriter keeps the reader
// off the writer's code.
func TestImportRules(t *testing.T) {
	pkgs := modulePackages(t)
	for _, must := range []string{"rotation", "sds", "filesink", "jwtfiles", "admin", "cmd/sds-bridge", "internal/bridge"} {
		if _, ok := pkgs[must]; !ok {
			t.Fatalf("go list did not list %s: the rules below would check nothing", must)
		}
	}
	never := func(pkg string, imports ...string) {
		for _, imp := range pkgs[pkg].imports {
			if slices.Contains(imports, strings.TrimPrefix(imp, module)) {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
	never("rotation", "sds", "filesink", "jwtfiles", "reload", "admin", "internal/bridge")
	never("sds", "filesink", "jwtfiles", "reload")
	never("filesink", "sds", "jwtfiles")
	never("jwtfiles", "sds")
	never("reload", "sds", "filesink", "jwtfiles")
	leaves := []string{"internal/certcheck", "internal/connlimit", "internal/flock",
		"internal/fielderr", "internal/loglimit"}
	for _, leaf := range leaves {
		for _, imp := range pkgs[leaf].imports {
			if strings.HasPrefix(imp, module) {
				t.Errorf("%s is a leaf helper but imports %s", leaf, imp)
			}
		}
	}
	for name, p := range pkgs {
		if name != "cmd/sds-bridge" && name != "e2e" && slices.Contains(p.imports, module+"internal/bridge") {
			t.Errorf("%s imports internal/bridge; only cmd/sds-bridge may", name)
		}
		for _, imp := range p.imports {
			if strings.HasPrefix(imp, module+"cmd/") {
				t.Errorf("%s imports %s", name, imp)
			}
			if strings.HasPrefix(imp, "github.com/jackc/pgx") && name != "reload/pgreload" {
				t.Errorf("%s imports pgx; only reload/pgreload may", name)
			}
		}
	}
	for _, pkg := range []string{"admin", "jwtfiles", "filesink", "sds", "rotation"} {
		for _, dep := range pkgs[pkg].deps {
			if strings.HasPrefix(dep, "github.com/jackc/") {
				t.Errorf("%s links %s", pkg, dep)
				break
			}
		}
	}
	for _, dep := range pkgs["cmd/sds-bridge"].deps {
		if strings.HasPrefix(dep, "github.com/envoyproxy/go-control-plane/pkg/") {
			t.Errorf("the daemon links %s: sds serves with a loop of its own", dep)
		}
	}
}

// TestTheFolderReaderDoesNotUseTheWriter keeps the rule docs/architecture.md
// states inside filesink: the reader (read_*.go: Inspect, Wait, and the
// check behind readiness and the start-up clean-up) judges a folder as a
// consumer does, so it uses only its own code and what both sides share
// (names.go: the layout's names and the marker; bounded.go: the bounded
// read), never the writer's. A reader built on the writer's idea of a set
// would agree with the writer even where both are wrong.
func TestTheFolderReaderDoesNotUseTheWriter(t *testing.T) {
	fset := token.NewFileSet()
	notTest := func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }
	pkgs, err := parser.ParseDir(fset, "../../filesink", notTest, 0)
	if err != nil {
		t.Fatal(err)
	}
	files := pkgs["filesink"].Files
	declaredIn := map[string]string{} // top-level name → its file
	for path, f := range files {
		for name := range f.Scope.Objects {
			declaredIn[name] = filepath.Base(path)
		}
	}
	writer := func(file string) bool {
		return !strings.HasPrefix(file, "read_") && file != "names.go" && file != "bounded.go"
	}
	readers, shared := 0, 0
	for path, f := range files {
		if writer(filepath.Base(path)) {
			continue
		}
		readers++
		// Unresolved are the names a file takes from the rest of its
		// package (or the universe): what it uses of other files.
		for _, id := range f.Unresolved {
			switch from := declaredIn[id.Name]; {
			case from == "":
			case writer(from):
				t.Errorf("%s uses %s, which the writer declares in %s", fset.Position(id.Pos()), id.Name, from)
			default:
				shared++
			}
		}
	}
	// Guards: the files were found, and what they take from other files is
	// seen (Names, readIn, …), so the rule reads real references.
	if readers < 8 || shared == 0 {
		t.Fatalf("%d reader and shared files, %d references between them: the rule above checked nothing", readers, shared)
	}
}

// goListDeps is `go list -deps pkg`: every package pkg links.
func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestTheDaemonLinksNoEnvoyBootstrapTooling keeps the bootstrap generator
// and validator, with Envoy's bootstrap, listener and filter types and
// every extension, out of the daemon: Go initialises every package a
// binary links, in every sidecar. sds-bridge-envoy links them, which shows
// the rule reads real dependency lists.
func TestTheDaemonLinksNoEnvoyBootstrapTooling(t *testing.T) {
	banned := []string{
		"github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/",
		"github.com/envoyproxy/go-control-plane/envoy/config/listener/",
		"github.com/envoyproxy/go-control-plane/envoy/extensions/filters/",
		"github.com/envoyproxy/go-control-plane/contrib/",
		module + "internal/envoyboot",
	}
	linked := func(deps []string, prefix string) string {
		for _, d := range deps {
			if strings.HasPrefix(d, prefix) {
				return d
			}
		}
		return ""
	}
	daemon, tool := goListDeps(t, "./cmd/sds-bridge"), goListDeps(t, "./cmd/sds-bridge-envoy")
	for _, b := range banned {
		if d := linked(daemon, b); d != "" {
			t.Errorf("the daemon (cmd/sds-bridge) links %s; the Envoy bootstrap tooling belongs in cmd/sds-bridge-envoy", d)
		}
		if linked(tool, b) == "" {
			t.Errorf("sds-bridge-envoy links nothing under %s: the rule above reads nothing", b)
		}
	}
}
