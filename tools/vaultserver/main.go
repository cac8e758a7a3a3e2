// Command vaultserver is HashiCorp Vault's own CLI, built from the Go module proxy so that tests
// and `make run` have a real Vault server on machines with no vault binary and no container
// engine. It is kept out of go.work on purpose: Vault's dependency graph would drag every
// service's grpc and protobuf versions along with it.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
