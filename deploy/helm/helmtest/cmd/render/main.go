// Command render renders the sds-bridge chart as `helm template` does, with
// Helm's Go SDK, and writes the objects to stdout as one multi-document YAML
// stream. The e2e suite and the daemon module's chart test run it with
// `go run` so that Helm stays in this module.
//
//	go run ./cmd/render -namespace demo -f values.yaml -set trustDomain=example.com ../sds-bridge
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sds-bridge/sds-bridge/deploy/helm/helmtest"
)

type list []string

func (l *list) String() string     { return fmt.Sprint(*l) }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var o helmtest.Options
	fs.StringVar(&o.Release, "release", "sds-bridge", "release name")
	fs.StringVar(&o.Namespace, "namespace", "default", "release namespace")
	fs.Var((*list)(&o.ValuesFiles), "f", "values file (repeatable)")
	fs.Var((*list)(&o.Set), "set", "KEY=VALUE, as helm --set (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: render [flags] CHART-DIR")
	}
	r, err := helmtest.Render(fs.Arg(0), o)
	if err != nil {
		return err
	}
	_, err = fmt.Print(r.Stream())
	return err
}
