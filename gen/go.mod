module github.com/bulkhead/bulkhead/gen

go 1.26.0
