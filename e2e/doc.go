// Package e2e is the black-box end-to-end suite of sds-bridge: it runs the
// sds-bridge binary as a process against a real SPIRE server and agent
// (v1.13.3, built from the Go module proxy in the e2e/tools module) and a
// real PostgreSQL, and checks both delivery patterns of the seed (Envoy over
// SDS, PostgreSQL from credential folders) across real rotations.
//
// The tests carry the build tag "e2e" so that the fast unit suite does not
// run them:
//
//	go test -tags e2e -count=1 -timeout 30m ./e2e/
//
// See README.md in this directory for what the suite needs and how long it
// takes.
package e2e
