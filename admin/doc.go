package admin

import "time"

// Status is the JSON document of /status: what every consumer has and
// when it expires. Absent times are left out.
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
	JWTSVIDs    []JWTSVIDStatus   `json:"jwt_svids"`
	SDS         *SDSStatus        `json:"sds,omitempty"` // absent without SDS
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
	Reconnects  uint64 `json:"reconnects"`
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
	// retries Pending after failed applies.
	RetryingSince time.Time `json:"retrying_since,omitzero"`
	Attempts      uint64    `json:"attempts,omitempty"`
	NextRetryAt   time.Time `json:"next_retry_at,omitzero"`
	Retries       uint64    `json:"retries"`
}

// FolderStatus is what is on disk in one credential folder.
type FolderStatus struct {
	Dir            string          `json:"dir"`
	Material       *MaterialStatus `json:"material,omitempty"` // or Problem says why none
	Problem        string          `json:"problem,omitempty"`
	WriteFailures  uint64          `json:"write_failures"`
	LastWriteError string          `json:"last_write_error,omitempty"`
	Actions        []ActionStatus  `json:"actions"`
	// ReloadPending is the generation swapped in whose actions wait for
	// a running one.
	ReloadPending uint64 `json:"reload_pending,omitempty"`
}

// JWTSVIDStatus is one JWT-SVID file: the token written last (absent
// before the first) and how its refresh goes.
type JWTSVIDStatus struct {
	Dir         string    `json:"dir"`
	File        string    `json:"file"`
	Audience    string    `json:"audience"`
	SPIFFEID    string    `json:"spiffe_id,omitempty"`
	Expiry      time.Time `json:"expiry,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// LastError is the last attempt's, absent once one succeeded.
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
	State      string `json:"state"` // one of the Action* states
	OK         bool   `json:"ok"`
	// Error is why the last run failed; NoServer why there was no server
	// to reload (not a failure).
	Error    string    `json:"error,omitempty"`
	NoServer string    `json:"no_server,omitempty"`
	At       time.Time `json:"at,omitzero"`
	Failures uint64    `json:"failures"`
	// Running is set while the action runs; the fields above are then its
	// previous run's.
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
	// The socket's connections and what its limits refused.
	RefusedPeers       int64 `json:"refused_peers"`
	ConnectionsOpen    int64 `json:"connections_open"`
	ConnectionsOverCap int64 `json:"connections_over_cap"`
	StreamsOverLimit   int64 `json:"streams_over_limit"`
	// ClientsCurrent counts the open streams whose last ACK is the current
	// generation; NewestAcked is the newest any acknowledged (0: none).
	ClientsCurrent int    `json:"clients_current"`
	NewestAcked    uint64 `json:"newest_acked_generation"`
	// Clients are the oldest open streams, at most MaxListedClients.
	Clients          []ClientStatus `json:"clients"`
	ClientsNotListed int            `json:"clients_not_listed,omitempty"`
}

// MaxListedClients bounds the streams /status lists: at 10 KB a stream at
// worst (what a client chose, cut by the SDS server, escaped and quoted)
// the document stays near 1 MB however many are open.
const MaxListedClients = 100

// ClientStatus is one open SDS stream; the text its client chose is cut
// to a bound by the SDS server and escaped with printable.
type ClientStatus struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
	Stream  int64  `json:"stream"`
	Delta   bool   `json:"delta"`
	// Validation is the validation_context kind the client gets
	// ("spiffe" or "trusted_ca", chosen as SPIRE Agent's SDS does), and
	// ValidationReason why. Subscribed is sorted.
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
