module github.com/sds-bridge/sds-bridge

go 1.26.8

require github.com/spiffe/go-spiffe/v2 v2.9.0

require go.yaml.in/yaml/v3 v3.0.6 // indirect
