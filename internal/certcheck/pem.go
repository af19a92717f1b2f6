package certcheck

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseCerts parses a PEM file of CERTIFICATE blocks only, strictly.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// ParseKey parses a PEM file holding exactly one private key.
func ParseKey(data []byte) (crypto.PrivateKey, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("want one private key block, found %d blocks", len(blocks))
	}
	return parseKeyBlock(blocks[0])
}

// ParseCredential parses a PEM file of one private key and a chain, in any
// order (the spiffe layout's key-and-chain file).
func ParseCredential(data []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, nil, err
	}
	var (
		certs []*x509.Certificate
		key   crypto.PrivateKey
	)
	for _, b := range blocks {
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			certs = append(certs, c)
			continue
		}
		if key != nil {
			return nil, nil, errors.New("more than one private key")
		}
		if key, err = parseKeyBlock(b); err != nil {
			return nil, nil, err
		}
	}
	switch {
	case key == nil:
		return nil, nil, errors.New("no private key")
	case len(certs) == 0:
		return nil, nil, errors.New("no certificate")
	}
	return certs, key, nil
}

// parseKeyBlock accepts PKCS#8 (what we write) and what other tools may
// have left (PKCS#1, SEC 1).
func parseKeyBlock(b *pem.Block) (crypto.PrivateKey, error) {
	switch b.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	}
	return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
}

var (
	errNoPEM    = errors.New("no PEM block found")
	errTrailing = errors.New("data after the last PEM block (truncated or not PEM)")
)

// decodePEM strictly splits data into PEM blocks: a file cut short in the
// middle of a block is an error, not a shorter chain.
func decodePEM(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := data
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
		rest = r
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errTrailing
	}
	if len(blocks) == 0 {
		return nil, errNoPEM
	}
	return blocks, nil
}
