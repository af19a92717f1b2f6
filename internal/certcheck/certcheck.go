// Package certcheck holds the checks a credential folder's reader makes on
// an X.509-SVID it reads back (and the writer's render, on an Update it is
// about to write), drawn as rotation's validation draws them (crypto/x509's
// window, both ends inclusive; x509svid.Verify), with one wording for a
// leaf outside its window wherever it is refused, rotation included; and
// the strict parsing of the PEM files a folder holds (pem.go).
package certcheck

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Window errors, for callers that tell the two cases apart.
var (
	ErrNotYetValid = errors.New("not yet valid")
	ErrExpired     = errors.New("expired")
)

// Window checks that now lies inside cert's validity window. Both ends are
// inclusive, as in RFC 5280 and in crypto/x509's Verify (which calls a
// certificate expired only when now.After(NotAfter)): a leaf is still valid
// at exactly NotAfter. The error wraps ErrNotYetValid or ErrExpired and
// reads "not valid until <time>" or "expired at <time>" (RFC 3339, UTC).
func Window(cert *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(cert.NotBefore):
		return &windowError{err: ErrNotYetValid, msg: "not valid until " + cert.NotBefore.UTC().Format(time.RFC3339)}
	case now.After(cert.NotAfter):
		return &windowError{err: ErrExpired, msg: "expired at " + cert.NotAfter.UTC().Format(time.RFC3339)}
	}
	return nil
}

type windowError struct {
	err error
	msg string
}

func (e *windowError) Error() string { return e.msg }
func (e *windowError) Unwrap() error { return e.err }

// ErrKeyMismatch marks a private key that does not belong to the leaf.
var ErrKeyMismatch = errors.New("private key does not match the leaf certificate")

// KeyMatches reports whether key is the private key of leaf. Public keys are
// compared by their DER encoding, which works for every key type
// crypto/x509 knows. A nil key, or one without a public half, is an error.
func KeyMatches(key crypto.PrivateKey, leaf *x509.Certificate) error {
	signer, ok := key.(interface{ Public() crypto.PublicKey })
	if !ok { // a nil key too
		return errors.New("no private key")
	}
	got, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	want, err := x509.MarshalPKIXPublicKey(leaf.PublicKey)
	if err != nil {
		return fmt.Errorf("leaf public key: %w", err)
	}
	if !bytes.Equal(got, want) {
		return ErrKeyMismatch
	}
	return nil
}

// Chain verifies certs (leaf first, then intermediates) as an X.509-SVID
// against bundles at time now.
func Chain(certs []*x509.Certificate, bundles x509bundle.Source, now time.Time) error {
	_, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	return err
}
