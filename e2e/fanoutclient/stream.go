//go:build benchfanout

package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

type sdsStream = grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

func newSDSStream(ctx context.Context, conn *grpc.ClientConn) (sdsStream, error) {
	return secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
}

// follow is one Envoy's SotW subscription: the first request carries the
// node, every response is ACKed with its version and nonce, and each new
// leaf of names[0] is recorded in lb with the time Recv returned.
func follow(s sdsStream, i int, names []string, lb *leafBook) error {
	req := &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "fanout-" + strconv.Itoa(i), Cluster: "fanout"},
		ResourceNames: names,
		TypeUrl:       resourcev3.SecretType,
	}
	var held *rotation
	for {
		// Send marshals before it returns, so req is reused.
		if err := s.Send(req); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		resp, err := s.Recv()
		at := time.Now()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		req.Node = nil // Envoy sends it on the first request only
		req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
		chain := certificateChain(resp, names[0])
		if chain == nil {
			continue // this response did not carry the followed name
		}
		r, err := lb.rotationOf(chain, at)
		if err != nil {
			return err
		}
		if r != held {
			lb.arrived(r, i, at, held == nil)
			held = r
		}
	}
}

// Field numbers on the wire: envoy.extensions.transport_sockets.tls.v3
// Secret{name = 1, tls_certificate = 2}, TlsCertificate{certificate_chain
// = 1}, envoy.config.core.v3 DataSource{inline_bytes = 2, inline_string = 3}.
const (
	secretName           protowire.Number = 1
	secretTLSCertificate protowire.Number = 2
	tlsCertificateChain  protowire.Number = 1
	dataSourceBytes      protowire.Number = 2
	dataSourceString     protowire.Number = 3
)

// certificateChain is the inline certificate chain of the Secret called
// name in resp, nil when resp does not carry it. It reads the wire format
// in place: no Secret is decoded and nothing is allocated.
func certificateChain(resp *discoveryv3.DiscoveryResponse, name string) []byte {
	for _, a := range resp.GetResources() {
		secret := a.GetValue()
		if string(field(secret, secretName)) != name {
			continue
		}
		chain := field(field(secret, secretTLSCertificate), tlsCertificateChain)
		if b := field(chain, dataSourceBytes); b != nil {
			return b
		}
		return field(chain, dataSourceString)
	}
	return nil
}

// field is the last length-delimited field num of the message msg (the
// last one wins, as in proto3 decoding); nil when it is absent or msg is
// malformed.
func field(msg []byte, num protowire.Number) []byte {
	var found []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil
			}
			found, msg = v, msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil
		}
		msg = msg[l:]
	}
	return found
}
