// Package helmtest renders the sds-bridge chart with Helm's own Go SDK, as
// `helm template` does, for its tests and for the e2e suite (cmd/render).
// It is a module of its own so that Helm and k8s.io stay out of the
// daemon's go.mod.
package helmtest

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
)

// Options are what `helm template` takes: a release name and namespace,
// values files (-f) and --set pairs, applied in that order.
type Options struct {
	Release, Namespace string
	ValuesFiles        []string
	Set                []string
}

// Rendered is one release's render: each template's output by its path in
// the chart, NOTES.txt apart.
type Rendered struct {
	Manifests map[string]string
	Notes     string
}

// Values merges the values files and --set pairs, as helm does.
func Values(o Options) (map[string]any, error) {
	vals := map[string]any{}
	for _, f := range o.ValuesFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		v, err := loader.LoadValues(strings.NewReader(string(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		vals = loader.MergeMaps(vals, v)
	}
	for _, s := range o.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	return vals, nil
}

// Render renders the chart in dir for an install, checking the values
// against values.schema.json first (as helm install does).
func Render(dir string, o Options) (*Rendered, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	vals, err := Values(o)
	if err != nil {
		return nil, err
	}
	opts := common.ReleaseOptions{Name: o.Release, Namespace: o.Namespace, Revision: 1, IsInstall: true}
	top, err := util.ToRenderValuesWithSchemaValidation(ch, vals, opts, common.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, top)
	if err != nil {
		return nil, err
	}
	r := &Rendered{Manifests: map[string]string{}}
	for name, text := range out {
		switch {
		case path.Base(name) == "NOTES.txt":
			r.Notes = text
		case strings.TrimSpace(text) != "" && !strings.HasPrefix(path.Base(name), "_"):
			r.Manifests[name] = text
		}
	}
	return r, nil
}

// Stream is every manifest as one multi-document YAML stream, in template
// path order.
func (r *Rendered) Stream() string {
	names := make([]string, 0, len(r.Manifests))
	for n := range r.Manifests {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", n, strings.TrimSpace(r.Manifests[n]))
	}
	return b.String()
}
