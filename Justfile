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

# The static checks CI runs: gofmt, go.mod tidiness, vet, staticcheck, cross-builds.
lint:
    test -z "$(gofmt -l .)"
    go mod tidy -diff
    go vet ./...
    go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
    GOOS=darwin GOARCH=arm64 go build ./...
    GOOS=freebsd GOARCH=amd64 go build ./...

# Everything CI runs, in CI's order.
ci:
    bash .ci/run

# Throughput against raw spawn and a plain River worker, and pickup latency (see README).
bench: build
    ./attune bench

# Regenerate the README's console screenshots with the browser tests (needs chromium).
screenshots:
    ATTUNE_SCREENSHOTS="$PWD/worker/console/testdata/screenshots" go test -count=1 -run 'TestBrowser$' ./worker/console
