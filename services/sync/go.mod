module github.com/bulkhead/bulkhead/services/sync

go 1.26.0

replace (
	github.com/bulkhead/bulkhead/gen => ../../gen
	github.com/bulkhead/bulkhead/pkg => ../../pkg
	github.com/bulkhead/bulkhead/services/connection => ../connection
	github.com/bulkhead/bulkhead/services/identity => ../identity
	github.com/bulkhead/bulkhead/services/vaultbroker => ../vaultbroker
)

require (
	github.com/bulkhead/bulkhead/gen v0.0.0-00010101000000-000000000000
	github.com/bulkhead/bulkhead/pkg v0.0.0-00010101000000-000000000000
	github.com/bulkhead/bulkhead/services/connection v0.0.0-00010101000000-000000000000
	github.com/bulkhead/bulkhead/services/identity v0.0.0-00010101000000-000000000000
	github.com/bulkhead/bulkhead/services/vaultbroker v0.0.0-00010101000000-000000000000
)

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.12.0 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	github.com/riverqueue/river v0.51.1 // indirect
	github.com/riverqueue/river/riverdriver v0.51.1 // indirect
	github.com/riverqueue/river/riverdriver/riverpgxv5 v0.51.1 // indirect
	github.com/riverqueue/river/rivershared v0.51.1 // indirect
	github.com/riverqueue/river/rivertype v0.51.1 // indirect
	github.com/sony/gobreaker/v2 v2.4.0 // indirect
	github.com/tidwall/gjson v1.20.0 // indirect
	github.com/tidwall/match v1.2.0 // indirect
	github.com/tidwall/pretty v1.2.1 // indirect
	github.com/tidwall/sjson v1.2.5 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/oauth2 v0.37.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261005182115-fad411399dd8 // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
