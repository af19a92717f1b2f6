// Package certcheck holds the checks made on an X.509-SVID read back from
// a folder or about to be written, drawn as rotation draws them, with one
// wording wherever a leaf is refused; and strict PEM parsing.
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

// Window checks that now lies inside cert's validity window, both ends
// inclusive as in RFC 5280 and crypto/x509. The error wraps ErrNotYetValid
// or ErrExpired.
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

// KeyMatches reports whether key is the private key of leaf, comparing
// public keys by their DER encoding (every type crypto/x509 knows).
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

// Chain verifies certs (leaf first) as an X.509-SVID at time now.
func Chain(certs []*x509.Certificate, bundles x509bundle.Source, now time.Time) error {
	_, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	return err
}
