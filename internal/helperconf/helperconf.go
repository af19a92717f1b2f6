// Package helperconf converts a spiffe-helper helper.conf (HCL v1, parsed as
// spiffe-helper parses it) into an equivalent sds-bridge YAML configuration.
// A key that is not carried over, or whose meaning changes, gets a Note and a
// YAML comment saying why; the worst is a file mode: spiffe-helper reads
// `cert_file_mode = 444` as decimal 444, which is octal 0674, not 0444.
package helperconf

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"

	"github.com/sds-bridge/sds-bridge/internal/config"
)

// helperConf is helper.conf as spiffe-helper declares it, file modes aside:
// they are read from the syntax tree, where 444 and 0444 still differ.
type helperConf struct {
	AgentAddress             string       `hcl:"agent_address"`
	Cmd                      string       `hcl:"cmd"`
	CmdArgs                  string       `hcl:"cmd_args"`
	CertDir                  string       `hcl:"cert_dir"`
	SVIDFileName             string       `hcl:"svid_file_name"`
	SVIDKeyFileName          string       `hcl:"svid_key_file_name"`
	SVIDBundleFileName       string       `hcl:"svid_bundle_file_name"`
	RenewSignal              string       `hcl:"renew_signal"`
	PIDFileName              string       `hcl:"pid_file_name"`
	DaemonMode               *bool        `hcl:"daemon_mode"`
	AddIntermediatesToBundle bool         `hcl:"add_intermediates_to_bundle"`
	IncludeFederatedDomains  bool         `hcl:"include_federated_domains"`
	OmitExpired              bool         `hcl:"omit_expired"`
	Hint                     string       `hcl:"hint"`
	JWTSVIDs                 []jwtSVID    `hcl:"jwt_svids"`
	JWTBundleFileName        string       `hcl:"jwt_bundle_file_name"`
	HealthChecks             healthChecks `hcl:"health_checks"`
}

type jwtSVID struct {
	Audience       string   `hcl:"jwt_audience"`
	ExtraAudiences []string `hcl:"jwt_extra_audiences"`
	FileName       string   `hcl:"jwt_svid_file_name"`
}

type healthChecks struct {
	ListenerEnabled bool   `hcl:"listener_enabled"`
	BindPort        int    `hcl:"bind_port"`
	LivenessPath    string `hcl:"liveness_path"`
	ReadinessPath   string `hcl:"readiness_path"`
}

// modeKeys are spiffe-helper's file mode keys, the sds-bridge key each
// becomes and its default, for a mode that cannot be converted.
var modeKeys = []struct {
	helper, bridge string
	def            config.Mode
	// private: other users must get no access (the bridge refuses it).
	private bool
}{
	{"cert_file_mode", "cert_mode", config.DefaultCertMode, false},
	{"key_file_mode", "key_mode", config.DefaultKeyMode, true},
	{"jwt_svid_file_mode", "jwt_mode", config.DefaultJWTMode, true},
	{"jwt_bundle_file_mode", "jwt_bundle_mode", config.DefaultJWTBundleMode, false},
}

var knownKeys = []string{
	"agent_address", "cmd", "cmd_args", "cert_dir", "svid_file_name", "svid_key_file_name",
	"svid_bundle_file_name", "renew_signal", "pid_file_name", "daemon_mode",
	"add_intermediates_to_bundle", "include_federated_domains", "omit_expired", "hint",
	"cert_file_mode", "key_file_mode", "jwt_svid_file_mode", "jwt_bundle_file_mode",
	"jwt_svids", "jwt_bundle_file_name", "health_checks",
}

// spiffe-helper's defaults: where it looks without agent_address or
// $SPIFFE_ENDPOINT_SOCKET, and its health_checks listener.
const (
	spiffeHelperDefaultAgent  = "/tmp/spire-agent/public/api.sock"
	spiffeHelperBindPort      = 8081
	spiffeHelperLivenessPath  = "/live"
	spiffeHelperReadinessPath = "/ready"
)

// windowsPipe: an agent_address spiffe-helper on Windows takes as a named
// pipe (\\.\pipe\name, or go-spiffe's npipe: scheme).
func windowsPipe(a string) bool {
	l := strings.ToLower(strings.ReplaceAll(a, "/", `\`))
	return strings.HasPrefix(l, "npipe:") || strings.HasPrefix(l, `\\.\pipe\`) || strings.HasPrefix(l, `\\?\pipe\`)
}

// Options tunes a conversion.
type Options struct {
	// BaseDir is spiffe-helper's working directory, for relative cert_dir
	// and pid_file_name; default: the current directory.
	BaseDir string
	// Owner, if set, becomes files[0].owner, for a consumer that reads the
	// files as another user (spiffe-helper's belong to whoever runs it).
	Owner *config.Owner
	// Getenv reads spiffe-helper's environment, for an unset
	// agent_address; default os.Getenv.
	Getenv func(string) string
}

// Note is one thing the user must know about the conversion.
type Note struct {
	// Key is the helper.conf key.
	Key string
	// Unsupported: the key's behaviour is not reproduced.
	Unsupported bool
	Text        string
}

func (n Note) String() string {
	kind := "warning"
	if n.Unsupported {
		kind = "not supported"
	}
	return fmt.Sprintf("%s: %s: %s", n.Key, kind, n.Text)
}

// Result is a converted helper.conf.
type Result struct {
	// YAML is the sds-bridge configuration, with the notes as comments.
	YAML  []byte
	Notes []Note
	// Once is daemon_mode = false: run the config with --once (a flag, so
	// the same config serves a sidecar and its init container).
	Once bool
	// origins maps a YAML key ("files[0].cert_file_name") to the
	// helper.conf key its value came from ("svid_file_name").
	origins map[string]string
}

// Config parses the converted YAML and checks it as run does, so that a
// value run would refuse is refused now, naming the helper.conf key. The
// Config is not defaulted: a caller may lay flags over it first.
func (r *Result) Config() (*config.Config, error) {
	c, err := config.Parse(bytes.NewReader(r.YAML))
	if err != nil {
		// A converter bug, not the user's: say so.
		return nil, fmt.Errorf("helperconf: the converted YAML does not parse (please report): %w", err)
	}
	// Default changes values behind pointers: check a copy of its own.
	check, err := config.Parse(bytes.NewReader(r.YAML))
	if err != nil {
		return nil, err
	}
	check.Default()
	err = check.Validate()
	if err == nil {
		return c, nil
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	for i, e := range errs {
		var ke *config.KeyError
		if errors.As(e, &ke) {
			if from := r.origin(ke.Key); from != "" {
				errs[i] = fmt.Errorf("%s: %w (as sds-bridge's %s)", from, ke.Err, ke.Key)
			}
		}
	}
	return nil, errors.Join(errs...)
}

// origin is the helper.conf key behind a YAML key or the nearest key
// enclosing it; "" for a value the converter made up.
func (r *Result) origin(key string) string {
	for key != "" {
		if from, ok := r.origins[key]; ok {
			return from
		}
		key = key[:max(strings.LastIndexAny(key, ".["), 0)]
	}
	return ""
}

// Unsupported lists the helper.conf keys whose behaviour the conversion
// does not carry over, each once, in the order noted.
func (r *Result) Unsupported() []string {
	var keys []string
	for _, n := range r.Notes {
		if n.Unsupported && !slices.Contains(keys, n.Key) {
			keys = append(keys, n.Key)
		}
	}
	return keys
}

// Convert returns the sds-bridge YAML for helper.conf src. It fails, as
// spiffe-helper would, only on bad HCL or a value of the wrong type.
func Convert(src []byte, opts Options) (*Result, error) {
	if opts.BaseDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("helperconf: %w", err)
		}
		opts.BaseDir = wd
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	file, err := hcl.ParseBytes(src)
	if err != nil {
		return nil, fmt.Errorf("helperconf: parse HCL: %w", err)
	}
	var hc helperConf
	if err := hcl.DecodeObject(&hc, file); err != nil {
		return nil, fmt.Errorf("helperconf: decode: %w", err)
	}
	c := &converter{opts: opts, origins: map[string]string{}}
	root, _ := file.Node.(*ast.ObjectList)
	c.convert(&hc, root)
	return &Result{YAML: c.out.Bytes(), Notes: c.notes, Once: c.once, origins: c.origins}, nil
}

type converter struct {
	opts    Options
	out     bytes.Buffer
	notes   []Note
	origins map[string]string
	once    bool
	// supervise holds the lines of a top-level supervise block (cmd +
	// renew_signal without pid_file_name), superviseNote its comment.
	supervise     []string
	superviseNote string
}

func (c *converter) from(key, helperKey string) { c.origins[key] = helperKey }

func (c *converter) warn(key, format string, args ...any) string {
	n := Note{Key: key, Text: fmt.Sprintf(format, args...)}
	c.notes = append(c.notes, n)
	return "WARNING (" + key + "): " + n.Text
}

func (c *converter) unsupported(key, format string, args ...any) string {
	n := Note{Key: key, Unsupported: true, Text: fmt.Sprintf(format, args...)}
	c.notes = append(c.notes, n)
	return "NOT SUPPORTED (" + key + "): " + n.Text
}

// comment writes text wrapped at 79 columns.
func (c *converter) comment(indent int, text string) {
	pad := strings.Repeat(" ", indent) + "# "
	line := pad
	for _, w := range strings.Fields(text) {
		if len(line) > len(pad) && len(line)+1+len(w) > 79 {
			c.out.WriteString(strings.TrimRight(line, " ") + "\n")
			line = pad
		}
		if len(line) > len(pad) {
			line += " "
		}
		line += w
	}
	c.out.WriteString(line + "\n")
}

func (c *converter) line(indent int, lines ...string) {
	for _, s := range lines {
		c.out.WriteString(strings.Repeat(" ", indent) + s + "\n")
	}
}

func q(s string) string { return strconv.Quote(s) }

func (c *converter) convert(hc *helperConf, root *ast.ObjectList) {
	c.comment(0, "sds-bridge configuration converted from a spiffe-helper helper.conf by `sds-bridge import-spiffe-helper`. Review every WARNING and NOT SUPPORTED comment before use.")
	c.unknownKeys(root)
	c.workloadAPI(hc)
	c.sdsAndAdmin(hc)
	c.folder(hc, root)
	c.jwt(hc)
	c.actions(hc)
	c.superviseAndDaemonMode(hc)
}

// unknownKeys notes keys this converter does not know: a newer
// spiffe-helper's, or typos (spiffe-helper itself refuses unknown keys).
func (c *converter) unknownKeys(root *ast.ObjectList) {
	var unknown []string
	if root != nil {
		for _, item := range root.Items {
			if len(item.Keys) > 0 {
				k := item.Keys[0].Token.Value()
				if name, ok := k.(string); ok && !slices.Contains(knownKeys, name) && !slices.Contains(unknown, name) {
					unknown = append(unknown, name)
				}
			}
		}
	}
	for _, k := range unknown {
		c.comment(0, c.unsupported(k, "unknown key; not converted (spiffe-helper refuses unknown keys too)%s", config.DidYouMean(k, knownKeys)))
	}
}

// workloadAPI maps agent_address.
func (c *converter) workloadAPI(hc *helperConf) {
	c.line(0, "workload_api:")
	switch a := hc.AgentAddress; {
	case windowsPipe(a):
		c.comment(2, c.unsupported("agent_address", "%s is a Windows named pipe: the bridge reads the Workload API over a unix socket or tcp:// only, so this helper.conf is for a Windows host the bridge does not run on. Not converted; set workload_api.address to the agent's socket on the Linux host", a))
	case a == "":
		c.defaultAgent()
	case strings.HasPrefix(a, "unix://"), strings.HasPrefix(a, "tcp://"):
		c.from("workload_api.address", "agent_address")
		c.line(2, "address: "+q(a)+" # agent_address")
	case strings.HasPrefix(a, "unix:"):
		c.from("workload_api.address", "agent_address")
		c.line(2, "address: "+q("unix://"+strings.TrimPrefix(a, "unix:"))+" # agent_address")
	default:
		c.from("workload_api.address", "agent_address")
		c.line(2, "address: "+q("unix://"+c.abs(2, "agent_address", a))+" # agent_address (a socket path)")
	}
}

// defaultAgent resolves an unset agent_address as spiffe-helper's
// ValidateConfig does, refusing both variables set as it does.
func (c *converter) defaultAgent() {
	endpoint, legacy := c.opts.Getenv("SPIFFE_ENDPOINT_SOCKET"), c.opts.Getenv("SPIRE_AGENT_ADDRESS")
	switch {
	case endpoint != "" && legacy != "":
		c.comment(2, c.unsupported("agent_address", "not set, and both $SPIFFE_ENDPOINT_SOCKET and $SPIRE_AGENT_ADDRESS are: spiffe-helper refuses that; set agent_address or unset one of them"))
	case endpoint != "":
		// Left empty: the bridge reads the same variable when it starts.
		c.comment(2, c.warn("agent_address", "not set: $SPIFFE_ENDPOINT_SOCKET (%s) is used, as spiffe-helper does; the bridge reads it when it starts", endpoint))
	case legacy != "":
		c.from("workload_api.address", "agent_address")
		c.comment(2, c.warn("agent_address", "not set: $SPIRE_AGENT_ADDRESS (deprecated) is used, as spiffe-helper does"))
		c.line(2, "address: "+q("unix://"+c.abs(2, "agent_address", legacy))+" # $SPIRE_AGENT_ADDRESS")
	default:
		c.from("workload_api.address", "agent_address")
		c.comment(2, "agent_address not set, nor $SPIFFE_ENDPOINT_SOCKET: spiffe-helper's default socket path. Remove this line to use $SPIFFE_ENDPOINT_SOCKET instead.")
		c.line(2, "address: "+q("unix://"+spiffeHelperDefaultAgent)+" # spiffe-helper's default agent address")
	}
}

// sdsAndAdmin turns SDS off (spiffe-helper has none) and maps
// health_checks onto the admin listener.
func (c *converter) sdsAndAdmin(hc *helperConf) {
	c.line(0, "sds:")
	c.comment(2, "spiffe-helper serves no SDS; set enabled: true (and socket) to also serve Envoy.")
	c.line(2, "enabled: false")

	c.line(0, "admin:")
	h := hc.HealthChecks
	if h.ListenerEnabled {
		c.comment(2, "health_checks: spiffe-helper listened on every interface. The bridge answers the same two probe paths, and /metrics and /status.")
		c.from("admin.listen", "health_checks.bind_port")
		c.line(2, "listen: "+q(fmt.Sprintf("0.0.0.0:%d", cmp.Or(h.BindPort, spiffeHelperBindPort)))+" # health_checks.listener_enabled + bind_port")
		c.from("admin.liveness_path", "health_checks.liveness_path")
		c.line(2, "liveness_path: "+q(cmp.Or(h.LivenessPath, spiffeHelperLivenessPath))+" # health_checks.liveness_path")
		c.from("admin.readiness_path", "health_checks.readiness_path")
		c.line(2, "readiness_path: "+q(cmp.Or(h.ReadinessPath, spiffeHelperReadinessPath))+" # health_checks.readiness_path")
	} else {
		c.comment(2, "spiffe-helper had no health listener (health_checks.listener_enabled is false); set e.g. 127.0.0.1:8081 for /livez, /readyz, /metrics and /status.")
		c.line(2, `listen: ""`)
	}
}

// folder maps cert_dir and the X.509 keys onto files[0].
func (c *converter) folder(hc *helperConf, root *ast.ObjectList) {
	c.line(0, "files:")
	dir := hc.CertDir
	if dir == "" {
		c.comment(4, c.warn("cert_dir", "not set: spiffe-helper wrote into its working directory; resolved against %s", c.opts.BaseDir))
		dir = c.opts.BaseDir
	} else {
		dir = c.abs(2, "cert_dir", dir)
	}
	c.from("files[0].dir", "cert_dir")
	c.line(2, "- dir: "+q(dir)+" # cert_dir")
	c.line(4, "layout: spiffe-helper")
	names := [][3]string{
		{"cert_file_name", hc.SVIDFileName, "svid_file_name"},
		{"key_file_name", hc.SVIDKeyFileName, "svid_key_file_name"},
		{"bundle_file_name", hc.SVIDBundleFileName, "svid_bundle_file_name"},
	}
	switch len(slices.DeleteFunc(slices.Clone(names), func(kv [3]string) bool { return kv[1] == "" })) {
	case 0:
		c.comment(4, c.warn("svid_file_name", "no X.509 file names set (a JWT-only helper.conf): the bridge always writes the X.509 files too, under the default names svid.pem, svid_key.pem, svid_bundle.pem"))
	case 1, 2:
		c.comment(4, c.warn("svid_file_name", "spiffe-helper refuses a helper.conf with only some of svid_file_name, svid_key_file_name, svid_bundle_file_name; the missing ones get the bridge's defaults"))
	}
	for _, kv := range names {
		if kv[1] != "" {
			c.from("files[0]."+kv[0], kv[2])
			c.line(4, kv[0]+": "+q(kv[1])+" # "+kv[2])
		}
	}
	if hc.Hint != "" {
		c.from("files[0].svid", "hint")
		c.line(4, "svid: "+q(hc.Hint)+" # hint")
	}
	if hc.AddIntermediatesToBundle {
		c.line(4, "add_intermediates_to_bundle: true # add_intermediates_to_bundle")
	}
	if hc.IncludeFederatedDomains {
		c.comment(4, c.warn("include_federated_domains", "spiffe-helper appends the federated roots to svid_bundle_file_name; federated_bundle: concatenate keeps that. A consumer that does not check SPIFFE IDs then accepts certificates any federated CA issues. The bridge also writes federated/<trust-domain>.pem; prefer federated_bundle: separate if your consumer can read those"))
		c.line(4, "include_federated_domains: true # include_federated_domains")
		c.line(4, "federated_bundle: concatenate")
	}
	if hc.OmitExpired {
		c.line(4, "omit_expired: true # omit_expired")
	}
	if o := c.opts.Owner; o != nil {
		c.comment(4, "--owner: every file belongs to this uid:gid (the bridge must run as root to give them away).")
		c.line(4, "owner: "+q(o.String())+" # --owner")
	}
	c.modes(root)
}

// jwt maps jwt_svids and jwt_bundle_file_name.
func (c *converter) jwt(hc *helperConf) {
	if len(hc.JWTSVIDs) > 0 {
		c.line(4, "jwt_svids: # jwt_svids")
		n := 0 // the YAML's index: skipped entries leave gaps in helper.conf's
		for i, j := range hc.JWTSVIDs {
			key := fmt.Sprintf("jwt_svids[%d]", i)
			if j.Audience == "" || j.FileName == "" {
				c.comment(6, c.unsupported(key, "jwt_audience and jwt_svid_file_name are both required (spiffe-helper refuses this entry too); skipped"))
				continue
			}
			out := fmt.Sprintf("files[0].jwt_svids[%d]", n)
			n++
			c.from(out, key)
			c.from(out+".audience", key+".jwt_audience")
			c.line(6, "- audience: "+q(j.Audience)+" # jwt_audience")
			if len(j.ExtraAudiences) > 0 {
				var qs []string
				for k, a := range j.ExtraAudiences {
					c.from(fmt.Sprintf("%s.extra_audiences[%d]", out, k), fmt.Sprintf("%s.jwt_extra_audiences[%d]", key, k))
					qs = append(qs, q(a))
				}
				c.line(8, "extra_audiences: ["+strings.Join(qs, ", ")+"] # jwt_extra_audiences")
			}
			c.from(out+".file_name", key+".jwt_svid_file_name")
			c.line(8, "file_name: "+q(j.FileName)+" # jwt_svid_file_name")
		}
	}
	if hc.JWTBundleFileName != "" {
		c.from("files[0].jwt_bundle_file_name", "jwt_bundle_file_name")
		c.line(4, "jwt_bundle_file_name: "+q(hc.JWTBundleFileName)+" # jwt_bundle_file_name")
	}
}

func (c *converter) superviseAndDaemonMode(hc *helperConf) {
	if len(c.supervise) > 0 {
		c.line(0, "supervise:")
		c.comment(2, c.superviseNote)
		c.line(2, c.supervise...)
	}

	if daemonOff(hc) {
		c.once = true
		c.comment(0, c.warn("daemon_mode", "false (write once, then exit): run this config with `sds-bridge run --once --config FILE`, which writes every folder, runs its reload actions and exits (non-zero after workload_api.first_update_timeout); `run --spiffe-helper-config` of this file does so by itself. Without --once the bridge keeps running and rotating"))
	}
}

// actions maps cmd, cmd_args, renew_signal and pid_file_name.
func (c *converter) actions(hc *helperConf) {
	var lines []string
	var comments []string
	actions := 0 // on_rotate entries so far
	_, sigErr := config.ParseSignal(hc.RenewSignal)
	if hc.PIDFileName != "" {
		switch {
		case hc.RenewSignal == "":
			comments = append(comments, c.unsupported("pid_file_name", "set without renew_signal (spiffe-helper refuses that): no signal action"))
		case sigErr != nil:
			comments = append(comments, c.unsupported("renew_signal", "%q: %v; no signal action", hc.RenewSignal, sigErr))
		default:
			c.from("files[0].on_rotate[0].signal.pid_file", "pid_file_name")
			c.from("files[0].on_rotate[0].signal.signal", "renew_signal")
			actions++
			lines = append(lines,
				"- signal: # pid_file_name + renew_signal",
				"    pid_file: "+q(c.abs(4, "pid_file_name", hc.PIDFileName)),
				"    signal: "+q(sigName(hc.RenewSignal)))
		}
	}
	cmdLines, cmdComments := c.cmdAction(hc, sigErr, actions)
	lines, comments = append(lines, cmdLines...), append(comments, cmdComments...)
	if hc.RenewSignal != "" && hc.Cmd == "" && hc.PIDFileName == "" {
		comments = append(comments, c.warn("renew_signal", "set without cmd or pid_file_name: nothing to signal, in spiffe-helper as in the bridge"))
	}
	if len(lines) == 0 && len(comments) == 0 {
		return
	}
	if len(hc.JWTSVIDs) > 0 && len(lines) > 0 {
		// spiffe-helper signals and runs cmd after a JWT-SVID update too;
		// the bridge runs an action on X.509 swaps only unless on says so.
		comments = append(comments, "jwt_svids: spiffe-helper also signals or runs cmd after every JWT-SVID update, so each action has on: [x509, jwt]; drop jwt where the program reads no token")
		lines = c.withOnJWT(lines)
	}
	for _, cm := range comments {
		c.comment(4, cm)
	}
	if len(lines) > 0 {
		c.line(4, "on_rotate:")
		c.line(6, lines...)
	}
}

// cmdAction maps cmd and cmd_args to a supervised program, an action
// (on_rotate[actions]) or only a note; it returns on_rotate lines and notes.
func (c *converter) cmdAction(hc *helperConf, sigErr error, actions int) (lines, comments []string) {
	if hc.Cmd == "" {
		if hc.CmdArgs != "" {
			comments = append(comments, c.warn("cmd_args", "set without cmd: ignored, as spiffe-helper does"))
		}
		return nil, comments
	}
	shell := slices.Contains([]string{"sh", "bash", "dash", "ash", "zsh"}, filepath.Base(hc.Cmd))
	args, note := splitCmdArgs(hc.CmdArgs, shell)
	if _, psql := psqlReloadDSN(hc.Cmd, args); note != "" && !psql {
		// A psql reload becomes an action with no argv to misread.
		comments = append(comments, c.warn("cmd_args", "%s", note))
	}
	argv := append([]string{hc.Cmd}, args...)
	var qs []string
	for _, a := range argv {
		qs = append(qs, q(a))
	}
	exec := "- exec: {command: [" + strings.Join(qs, ", ") + "]} # cmd + cmd_args"
	switch {
	case hc.RenewSignal != "" && hc.PIDFileName == "" && sigErr == nil && !daemonOff(hc):
		// The signal went to spiffe-helper's long-running child.
		c.from("supervise.command", "cmd")
		c.from("supervise.renew_signal", "renew_signal")
		c.supervise = []string{
			"command: [" + strings.Join(qs, ", ") + "] # cmd + cmd_args",
			"renew_signal: " + q(sigName(hc.RenewSignal)) + " # renew_signal",
		}
		c.superviseNote = c.warn("cmd", "spiffe-helper starts %q once, keeps it as its child and sends it renew_signal %s on every renewal: so does the bridge (supervise), starting it only once the folder holds a complete, valid set and forwarding SIGTERM/SIGINT to it. When it exits the bridge exits with its status (spiffe-helper kept running and started it again at the next renewal; restart: on-failure restarts it)", hc.Cmd, sigName(hc.RenewSignal))
	case hc.RenewSignal != "" && hc.PIDFileName == "":
		// Not supervised, and running it at every rotation would start
		// a second copy each time.
		why := fmt.Sprintf("renew_signal %q is not a signal the bridge sends", hc.RenewSignal)
		if sigErr == nil {
			why = "daemon_mode = false (run --once) starts no program"
		}
		comments = append(comments, c.unsupported("cmd", "spiffe-helper starts %q once, keeps it as its child and sends it renew_signal %s on every renewal; not converted: %s. The exec action below is left commented out", hc.Cmd, hc.RenewSignal, why))
		comments = append(comments, "- exec: {command: ["+strings.Join(qs, ", ")+"]}")
	default:
		if dsn, ok := psqlReloadDSN(hc.Cmd, args); ok {
			c.from(fmt.Sprintf("files[0].on_rotate[%d].postgres", actions), "cmd")
			comments = append(comments, c.warn("cmd", "%q with cmd_args %q runs SELECT pg_reload_conf() through psql: converted to the bridge's built-in postgres action over the same connection (dsn %q; what it leaves out comes from PGHOST, PGPORT, PGUSER… and the bridge's OS user, as for psql). Unlike psql, it takes a server that has not started yet for nothing to reload (the server reads the files when it starts), not for a failure", hc.Cmd, hc.CmdArgs, dsn))
			return append(lines, "- postgres: {dsn: "+q(dsn)+"} # cmd + cmd_args (psql … pg_reload_conf())"), comments
		}
		c.from(fmt.Sprintf("files[0].on_rotate[%d].exec", actions), "cmd")
		comments = append(comments, c.warn("cmd", "spiffe-helper starts %q on a renewal when it is not running (so a command that exits runs on every renewal); the bridge runs it after every rotation and waits for it (30s timeout): right for a reload command, wrong for a long-running program", hc.Cmd))
		lines = append(lines, exec)
	}
	return lines, comments
}

// withOnJWT adds on: [x509, jwt] to every action in lines (each starts
// with "- ", its keys indented under it), noting where each came from.
func (c *converter) withOnJWT(lines []string) []string {
	var out []string
	n := 0 // on_rotate index
	for i, l := range lines {
		out = append(out, l)
		if i+1 == len(lines) || strings.HasPrefix(lines[i+1], "- ") {
			out = append(out, "  on: [x509, jwt]")
			c.from(fmt.Sprintf("files[0].on_rotate[%d].on", n), "jwt_svids")
			n++
		}
	}
	return out
}

func daemonOff(hc *helperConf) bool { return hc.DaemonMode != nil && !*hc.DaemonMode }

// splitCmdArgs splits cmd_args as spiffe-helper does, as CSV with a space as
// the separator: "a b" groups words, 'single quotes' are ordinary, two
// spaces make an empty argument and no shell expands anything (unless the
// program is one: shell). note says what a shell user might misread.
func splitCmdArgs(s string, shell bool) (args []string, note string) {
	if s == "" {
		return nil, ""
	}
	r := csv.NewReader(strings.NewReader(s))
	r.Comma = ' '
	args, err := r.Read()
	if err != nil {
		// spiffe-helper fails on such a string too; fall back to spaces.
		return strings.Fields(s), fmt.Sprintf("%q cannot be split as spiffe-helper splits it (%v): spiffe-helper cannot start this command either; split at spaces instead, check the result", s, err)
	}
	var why []string
	if strings.ContainsAny(s, `"`) {
		why = append(why, `double quotes group words CSV-style (as spiffe-helper reads them)`)
	}
	if strings.ContainsAny(s, `'\`) {
		why = append(why, `single quotes and backslashes are kept as ordinary characters, not shell quoting`)
	}
	if !shell && strings.ContainsAny(s, "$`|;&<>*?~") {
		why = append(why, "shell syntax ($, |, ;, &, <, >, globs) reaches the program as is: neither spiffe-helper nor the bridge puts a shell in between (cmd = \"/bin/sh\" with -c \"...\" if you need one)")
	}
	if slices.Contains(args, "") {
		why = append(why, "repeated spaces make empty arguments")
	}
	if len(why) == 0 {
		return args, ""
	}
	return args, fmt.Sprintf("%q split into %d arguments as spiffe-helper splits it: %s", s, len(args), strings.Join(why, "; "))
}

// modes converts the four file modes from their literal spelling.
func (c *converter) modes(root *ast.ObjectList) {
	for _, m := range modeKeys {
		text, ok := literal(root, m.helper)
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(text, 0, 64)
		if err != nil || v <= 0 {
			c.comment(4, c.unsupported(m.helper, "%q is not a positive number (spiffe-helper refuses it); the bridge's default %s is used", text, m.def))
			continue
		}
		decimal := !strings.HasPrefix(text, "0") // 0644, 0o644, 0x1a4 are not decimal
		// os.WriteFile keeps only the permission bits of a larger number.
		mode := config.Mode(v & 0o777)
		if decimal {
			c.comment(4, c.warn(m.helper, "%s has no leading 0, so spiffe-helper read it as DECIMAL %d = octal %04o: it created files with mode %s (less its umask), not %04s. Kept as spiffe-helper applied it; you probably meant \"%04s\"", text, v, v, mode, text, text))
		}
		if mode == 0 {
			c.comment(4, c.unsupported(m.helper, "%s leaves no permission bits; the bridge's default %s is used", text, m.def))
			continue
		}
		others, why := config.Mode(0o002), "lets every user replace the file"
		if m.private {
			others, why = 0o007, "gives every user access to a private credential"
		}
		if mode&others != 0 {
			// With nothing left, the default is written, and the note must say so.
			using := mode &^ others
			if using == 0 {
				using = m.def
			}
			c.comment(4, c.warn(m.helper, "%s %s, which the bridge refuses; using %s", mode, why, using))
			mode = using
		}
		if mode&0o400 == 0 {
			safe := mode | 0o400
			c.comment(4, c.warn(m.helper, "%s does not let the file's owner read it, which the bridge refuses; using %s", mode, safe))
			mode = safe
		}
		c.from("files[0]."+m.bridge, m.helper)
		c.line(4, m.bridge+": "+q(mode.String())+" # "+m.helper+" = "+text)
	}
}

// literal is the source spelling of a top-level number or string.
func literal(root *ast.ObjectList, key string) (string, bool) {
	if root == nil {
		return "", false
	}
	items := root.Filter(key).Items
	if len(items) == 0 {
		return "", false
	}
	lit, ok := items[len(items)-1].Val.(*ast.LiteralType)
	if !ok {
		return "", false
	}
	if lit.Token.Type == token.STRING {
		s, _ := lit.Token.Value().(string)
		return s, true
	}
	return lit.Token.Text, true
}

func (c *converter) abs(indent int, key, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	if windowsPath(p) {
		// Joined to BaseDir it would become a nonsense unix path.
		c.comment(indent, c.unsupported(key, "%s is a Windows path; the bridge runs on Linux. Kept as is, so the conversion is refused: give the Linux path", p))
		return p
	}
	a := filepath.Join(c.opts.BaseDir, p)
	c.comment(indent, c.warn(key, "%q is relative to spiffe-helper's working directory; resolved to %s", p, a))
	return a
}

// windowsPath: a drive letter (C:\certs, C:/certs) or a UNC path.
func windowsPath(p string) bool {
	return strings.HasPrefix(p, `\\`) || len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		('a' <= p[0]|0x20 && p[0]|0x20 <= 'z')
}

// sigName spells a valid renew_signal as the config documents it: SIGHUP.
func sigName(s string) string {
	sig, _ := config.ParseSignal(s)
	return config.Signal(sig).String()
}
