# attune tasks. `just --list` shows them.

# Build attune, the core timer sensor and the example pack binaries.
build:
    go build -buildvcs=true -o attune .
    go build -o packs/core/sensors/attune-core-timer-sensor ./packs/core/sensors/timer
    go build -o packs/examples/actions/hello ./packs/examples/actions/hello_src

# Run every test against a real PostgreSQL (the README's test command).
test:
    go test ./...

# Run the showcase on this machine.
demo:
    go run . demo

# gofmt, go vet and the race-enabled test suite, as CI does.
lint:
    test -z "$(gofmt -l .)"
    go vet ./...

# Throughput and pickup latency against raw spawn (see README).
bench: build
    ./attune bench
