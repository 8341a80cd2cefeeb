GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SERVICES := broker ctl fetch scheduler prepare run image info collect depsolver web

.PHONY: build test test-short vet fmt clean

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/cb ./cmd/cb
	@for s in $(SERVICES); do ln -sf cb bin/cb-$$s; done

test: build
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 80m ./...

test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=darwin $(GO) build -o /dev/null ./cmd/cb
	GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./cmd/cb
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)

clean:
	rm -rf bin
