# Bulkhead's developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE := $(CURDIR)/.cache
BIN := $(CACHE)/bin
export PATH := $(BIN):$(PATH)

# Every module in go.work; go vet and tests run over all of them.
MODULES := $(shell sed -n 's|^[[:space:]]*\./\([^[:space:]]*\)$$|\1|p' go.work)
# The protovalidate release whose validate.proto is vendored under proto/third_party.
PROTOVALIDATE_VERSION := v1.2.2
PROTOVALIDATE_PROTO := proto/third_party/protovalidate/buf/validate/validate.proto
# Tools pinned by the `tool` directives of tools/gotools/go.mod.
TOOLS := github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc github.com/fullstorydev/grpcurl/cmd/grpcurl
# -race costs ~2x on 2 cores; CI keeps it because tenancy bugs are often concurrency bugs.
TESTFLAGS ?= -race -count=1
BENCHFLAGS ?= -run='^$$' -bench=. -benchmem -benchtime=2s

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned tools (buf, protoc plugins) into .cache/bin
	@GOWORK=off go -C tools/gotools build -o $(BIN)/ $(TOOLS)

.PHONY: proto-deps
proto-deps: ## Re-copy validate.proto from the pinned protovalidate Go module
	@dir=$$(GOWORK=off go -C tools/gotools mod download -json github.com/bufbuild/protovalidate@$(PROTOVALIDATE_VERSION) | sed -n 's/.*"Dir": "\(.*\)",/\1/p'); \
	install -m 0644 -D "$$dir/proto/protovalidate/buf/validate/validate.proto" $(PROTOVALIDATE_PROTO)

.PHONY: generate
generate: tools ## Regenerate gen/ from proto/
	@rm -rf gen/bulkhead
	@buf generate

.PHONY: lint
lint: tools ## buf lint + breaking, go vet, gofmt, and fail on stale generated code
	buf lint
	@# Breaking changes are checked against the last commit on main (uncommitted proto edits are
	@# compared with HEAD; a clean tree with HEAD~1). Nothing to compare on the first proto commit.
	@if [ -n "$$(git status --porcelain -- proto)" ]; then ref=HEAD; else ref=HEAD~1; fi; \
	if git rev-parse -q --verify "$$ref" >/dev/null && [ -n "$$(git ls-tree -r --name-only $$ref -- proto/bulkhead)" ]; then \
		echo "buf breaking --against .git#ref=$$ref"; buf breaking --against ".git#ref=$$ref"; \
	else echo "buf breaking: no earlier proto to compare with"; fi
	@for m in $(MODULES); do echo "go vet ./$$m/..."; go vet ./$$m/...; done
	@unformatted=$$(gofmt -l $(MODULES)); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed:" $$unformatted >&2; exit 1; fi
	@$(MAKE) --no-print-directory proto-deps generate
	@if [ -n "$$(git status --porcelain -- gen proto/third_party)" ]; then \
		git status --porcelain -- gen proto/third_party; \
		echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; fi
	@echo "lint: ok"

.PHONY: test
# Vault is resolved (or built, ≈12 min on a bare machine) before the tests, not inside a test
# binary, where go test's 10-minute timeout would kill the build.
test: vault ## Run every test against real PostgreSQL, Vault and gRPC over loopback
	@# Say which Vault mode this run exercises (go test hides passing tests' output otherwise).
	@go test -count=1 -v -run '^(TestVaultMode|TestNamespaceMode)$$' ./services/vaultbroker/internal/vault/ \
		| { grep -E 'vault mode|namespace-mode tests|^(FAIL|ok)' || true; }
	go test $(TESTFLAGS) $(addprefix ./,$(addsuffix /...,$(MODULES)))

.PHONY: bench
bench: vault ## Run the benchmarks (ratios against in-run baselines)
	go test $(BENCHFLAGS) $(addprefix ./,$(addsuffix /...,$(MODULES)))

.PHONY: run
run: tools ## Run the whole suite on embedded defaults (own PostgreSQL unless BULKHEAD_DATABASE_URL)
	go run ./deploy/local $(RUNFLAGS)

.PHONY: vault
vault: ## Find or build (once, into the user cache) the Vault server tests and `make run` use
	@go run ./deploy/local -prepare
