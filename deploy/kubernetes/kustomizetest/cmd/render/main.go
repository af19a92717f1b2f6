// Command render builds a kustomization directory with krusty, as
// `kustomize build DIR` does, and writes the objects to stdout as one
// multi-document YAML stream. The e2e suite runs it with `go run` so that
// kustomize stays in this module and out of the daemon's go.mod.
//
//	go run ./cmd/render ../base
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: render DIR (a kustomization directory)")
	}
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return fmt.Errorf("build %s: %w", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		return fmt.Errorf("build %s: %w", dir, err)
	}
	_, err = os.Stdout.Write(out)
	return err
}
