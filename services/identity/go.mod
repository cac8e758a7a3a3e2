module github.com/bulkhead/bulkhead/services/identity

go 1.26.0

replace (
	github.com/bulkhead/bulkhead/gen => ../../gen
	github.com/bulkhead/bulkhead/pkg => ../../pkg
)
