package sds

import (
	"fmt"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Validation is the kind of validation_context a client gets, chosen per
// request from its node, as SPIRE Agent's SDS does.
type Validation int

const (
	ValidationSPIFFE    Validation = iota // Envoy's SPIFFE validator; AllBundles served
	ValidationTrustedCA                   // plain trusted_ca; AllBundles not served
)

// String is the name /status shows: "spiffe" or "trusted_ca".
func (v Validation) String() string {
	switch v {
	case ValidationSPIFFE:
		return "spiffe"
	case ValidationTrustedCA:
		return "trusted_ca"
	}
	return "Validation(" + strconv.Itoa(int(v)) + ")"
}

// DisableSPIFFECertValidationKey is the node metadata key with which an
// Envoy overrides DisableSPIFFECertValidation, as with SPIRE Agent.
const DisableSPIFFECertValidationKey = "disable_spiffe_cert_validation"

// validationFor is SPIRE Agent's choice (getValidationContextBuilder) for
// node, and why: an Envoy older than 1.18 gets trusted_ca (it lacks the
// SPIFFE validator); else node metadata decides; else the config. It runs
// on every request and allocates nothing.
func validationFor(node *corev3.Node, disabledByConfig bool) (Validation, validationReason) {
	if v := node.GetUserAgentBuildVersion().GetVersion(); v != nil && (v.GetMajorNumber() < 1 || (v.GetMajorNumber() == 1 && v.GetMinorNumber() < 18)) {
		return ValidationTrustedCA, validationReason{by: byOldEnvoy, agent: clipTo(node.GetUserAgentName(), maxStoredID),
			major: v.GetMajorNumber(), minor: v.GetMinorNumber()}
	}
	if disabled, ok := metadataBool(node, DisableSPIFFECertValidationKey); ok {
		return validationOf(disabled), validationReason{by: byMetadata, disabled: disabled}
	}
	return validationOf(disabledByConfig), validationReason{by: byConfig, disabled: disabledByConfig}
}

// validationReason says why validationFor chose as it did.
type validationReason struct {
	by           uint8
	agent        string
	major, minor uint32
	disabled     bool
}

const (
	byConfig = iota
	byMetadata
	byOldEnvoy
)

func (r validationReason) String() string {
	switch r.by {
	case byOldEnvoy:
		agent := r.agent
		if agent == "" {
			agent = "client"
		}
		return fmt.Sprintf("%s %d.%d lacks the SPIFFE validator (1.18+)", clip(agent), r.major, r.minor)
	case byMetadata:
		return fmt.Sprintf("node metadata %s: %t", DisableSPIFFECertValidationKey, r.disabled)
	}
	return fmt.Sprintf("config sds.disable_spiffe_cert_validation: %t", r.disabled)
}

func validationOf(disabled bool) Validation {
	if disabled {
		return ValidationTrustedCA
	}
	return ValidationSPIFFE
}

// metadataBool reads a bool, or a string that parses as one, as SPIRE's
// parseBool does.
func metadataBool(node *corev3.Node, key string) (value, ok bool) {
	switch v := node.GetMetadata().GetFields()[key].GetKind().(type) {
	case *structpb.Value_BoolValue:
		return v.BoolValue, true
	case *structpb.Value_StringValue:
		b, err := strconv.ParseBool(v.StringValue)
		return b, err == nil
	}
	return false, false
}
