package admin

import "time"

// Status is the JSON document of /status: what every consumer has and
// when it expires. Times are RFC 3339; absent times are left out. The
// server builds one per request (snapshot); /status serves it, /readyz
// prints its Problems, /metrics renders it and `sds-bridge status` prints
// it (WriteText).
type Status struct {
	Version     string            `json:"version"`
	Time        time.Time         `json:"time"`
	Ready       bool              `json:"ready"`
	Problems    []string          `json:"problems,omitempty"`
	Generation  uint64            `json:"generation"`
	ReceivedAt  time.Time         `json:"received_at,omitzero"`
	SVIDs       []SVIDStatus      `json:"svids"`
	Bundles     []BundleStatus    `json:"bundles"`
	WorkloadAPI WorkloadAPIStatus `json:"workload_api"`
	Sinks       []SinkStatus      `json:"sinks"`
	Folders     []FolderStatus    `json:"folders"`
	// JWTSVIDs are the JWT-SVID files of every folder, in config order.
	JWTSVIDs []JWTSVIDStatus `json:"jwt_svids"`
	// SDS is absent when the bridge serves no SDS.
	SDS *SDSStatus `json:"sds,omitempty"`
}

// SVIDStatus is one SVID of the current generation.
type SVIDStatus struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Default   bool      `json:"default"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Hint      string    `json:"hint,omitempty"`
}

// BundleStatus is one trust domain's bundle.
type BundleStatus struct {
	TrustDomain string `json:"trust_domain"`
	Authorities int    `json:"authorities"`
}

// WorkloadAPIStatus counts what came from the Workload API and was not used.
type WorkloadAPIStatus struct {
	Refused     uint64 `json:"refused_updates"`
	WatchErrors uint64 `json:"watch_errors"`
	// Reconnects counts the watch coming back after losing its connection.
	Reconnects uint64 `json:"reconnects"`
}

// SinkStatus is what one sink did with the newest generation.
type SinkStatus struct {
	Name           string    `json:"name"`
	Generation     uint64    `json:"generation"`
	Pending        uint64    `json:"pending,omitempty"`
	AppliedAt      time.Time `json:"applied_at,omitzero"`
	TookSeconds    float64   `json:"took_seconds"`
	LatencySeconds float64   `json:"latency_seconds"`
	Failures       uint64    `json:"failures"`
	Error          string    `json:"error,omitempty"`
	// RetryingSince, Attempts and NextRetryAt are set while the sink
	// retries Pending after failed applies; Error is the last one's.
	RetryingSince time.Time `json:"retrying_since,omitzero"`
	Attempts      uint64    `json:"attempts,omitempty"`
	NextRetryAt   time.Time `json:"next_retry_at,omitzero"`
	// Retries counts applies since start that repeated a failed one.
	Retries uint64 `json:"retries"`
}

// FolderStatus is what is on disk in one credential folder.
type FolderStatus struct {
	Dir string `json:"dir"`
	// Material is the valid set found, or Problem says why there is none.
	Material       *MaterialStatus `json:"material,omitempty"`
	Problem        string          `json:"problem,omitempty"`
	WriteFailures  uint64          `json:"write_failures"`
	LastWriteError string          `json:"last_write_error,omitempty"`
	Actions        []ActionStatus  `json:"actions"`
	// ReloadPending is the generation swapped in whose actions wait for
	// a running one (see ActionStatus.Running); absent when none waits.
	ReloadPending uint64 `json:"reload_pending,omitempty"`
}

// JWTSVIDStatus is one JWT-SVID file: the token it holds and how its
// refresh goes.
type JWTSVIDStatus struct {
	Dir      string `json:"dir"`
	File     string `json:"file"`
	Audience string `json:"audience"`
	// SPIFFEID, Expiry and LastRefresh are the token written last;
	// absent before the first.
	SPIFFEID    string    `json:"spiffe_id,omitempty"`
	Expiry      time.Time `json:"expiry,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// Failures counts failed refreshes since start; LastError is the last
	// attempt's, absent once one succeeded.
	Failures    uint64    `json:"refresh_failures"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// MaterialStatus describes the set in a folder.
type MaterialStatus struct {
	SPIFFEID   string    `json:"spiffe_id"`
	Serial     string    `json:"serial"`
	NotAfter   time.Time `json:"not_after"`
	Generation uint64    `json:"generation"`
}

// ActionStatus is the last run of one reload action.
type ActionStatus struct {
	Action     string `json:"action"`
	Generation uint64 `json:"generation"`
	Attempts   int    `json:"attempts"`
	// State is one of the Action* states.
	State string `json:"state"`
	OK    bool   `json:"ok"`
	// Error is why the last run failed; NoServer why there was no server
	// to reload (not a failure).
	Error    string    `json:"error,omitempty"`
	NoServer string    `json:"no_server,omitempty"`
	At       time.Time `json:"at,omitzero"`
	Failures uint64    `json:"failures"`
	// Running is set while the action runs, for RunningGeneration, since
	// RunningSince (RunningSeconds ago); the fields above describe its
	// previous run. The folder's swaps go on meanwhile.
	Running           bool      `json:"running,omitempty"`
	RunningGeneration uint64    `json:"running_generation,omitempty"`
	RunningSince      time.Time `json:"running_since,omitzero"`
	RunningSeconds    float64   `json:"running_seconds,omitempty"`
}

// ActionStatus.State values.
const (
	ActionNotRun   = "not run yet"
	ActionOK       = "ok"
	ActionFailed   = "failed"
	ActionNoServer = "no server to reload"
)

// SDSStatus is the SDS server and its clients.
type SDSStatus struct {
	Version     string `json:"version"`
	Generation  uint64 `json:"generation"`
	StreamsOpen int64  `json:"streams_open"`
	Pushes      int64  `json:"pushes"`
	NACKs       int64  `json:"nacks"`
	// The SDS socket's connections and what its limits refused.
	RefusedPeers       int64 `json:"refused_peers"`
	ConnectionsOpen    int64 `json:"connections_open"`
	ConnectionsOverCap int64 `json:"connections_over_cap"`
	StreamsOverLimit   int64 `json:"streams_over_limit"`
	// ClientsCurrent counts the open streams whose last acknowledged
	// version is the current generation; NewestAcked is the newest
	// generation any of them acknowledged (0: none yet).
	ClientsCurrent int    `json:"clients_current"`
	NewestAcked    uint64 `json:"newest_acked_generation"`
	// Clients are the oldest open streams, at most MaxListedClients;
	// ClientsNotListed counts the others.
	Clients          []ClientStatus `json:"clients"`
	ClientsNotListed int            `json:"clients_not_listed,omitempty"`
}

// MaxListedClients bounds the streams /status lists: with every string a
// client chooses cut where the SDS server keeps it (under 2 KiB a stream;
// 10 KB at worst once every byte is a control character, escaped and
// JSON-quoted), the streams take about 1 MB of the document at most,
// however many are open.
const MaxListedClients = 100

// ClientStatus is one open SDS stream. The text its client chose (node,
// cluster, NACK, versions, the user agent in ValidationReason) is cut to
// a bound by the SDS server and escaped with printable.
type ClientStatus struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
	Stream  int64  `json:"stream"`
	Delta   bool   `json:"delta"`
	// Validation is the kind of validation_context the client gets
	// ("spiffe": Envoy's SPIFFE validator, "trusted_ca": plain roots, no
	// ALL), chosen per client as SPIRE Agent's SDS chooses; ValidationReason
	// says why (its Envoy version, its node metadata, or the config).
	// Wildcard: the stream asks for every secret served; Subscribed: the
	// names it asks for, as the stream serves them (sorted).
	Wildcard         bool      `json:"wildcard"`
	Subscribed       []string  `json:"subscribed,omitempty"`
	Validation       string    `json:"validation"`
	ValidationReason string    `json:"validation_reason"`
	OpenedAt         time.Time `json:"opened_at"`
	AckedVersion     string    `json:"acked_version,omitempty"`
	AckedGeneration  uint64    `json:"acked_generation"`
	AckedAt          time.Time `json:"acked_at,omitzero"`
	NACKedVersion    string    `json:"nacked_version,omitempty"`
	NACK             string    `json:"nack,omitempty"`
	NACKedAt         time.Time `json:"nacked_at,omitzero"`
}
