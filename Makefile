# kpipe: Kafka backup, restore and point-in-time recovery as plugin pipelines.
SHELL := /bin/bash
GO ?= go
PLUGINS := kafka fs s3 filter remap
# Tests run against their own broker on this port, so they never touch the
# one `make kafka-up` / `make demo` start on 9092.
TEST_KAFKA_PORT ?= 19092
# ... and their own S3 server on this one (`make s3-up` uses 9000).
TEST_S3_PORT ?= 19000
# The test broker opens its secure listeners too (SASL_SSL and mutual TLS).
TEST_KAFKA := KAFKA_SECURE=1 KAFKA_PORT=$(TEST_KAFKA_PORT)

.PHONY: all build test test-short fuzz chaos demo bench kafka-up kafka-down s3-up s3-down proto fmt vet deps clean

all: build

deps: ## install what the build and tests need (Java, Maven) when missing
	@bash scripts/deps.sh

# Static binaries (no libc): each process maps less, and they run anywhere.
build: export CGO_ENABLED = 0
build: ## build bin/kpipe and bin/plugins/kpipe-plugin-* (static)
	$(GO) build -o bin/kpipe ./cmd/kpipe
	@for p in $(PLUGINS); do $(GO) build -o bin/plugins/kpipe-plugin-$$p ./plugins/$$p || exit 1; done

test: deps build ## every test, against a real Kafka broker and a real S3 server started here
	@scripts/pyarrow.sh >/dev/null
	@$(TEST_KAFKA) scripts/kafka.sh up >/dev/null
	@S3_PORT=$(TEST_S3_PORT) scripts/s3.sh up >/dev/null
	@set -o pipefail; KPIPE_PYARROW_PYTHON=$$(scripts/pyarrow.sh) \
	  KPIPE_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) KPIPE_TEST_S3=http://127.0.0.1:$(TEST_S3_PORT) \
	  KPIPE_PLUGIN_DIR=$(CURDIR)/bin/plugins \
	  $(GO) test -race -count=1 -timeout 20m ./... ; rc=$$?; \
	  $(TEST_KAFKA) scripts/kafka.sh down; S3_PORT=$(TEST_S3_PORT) scripts/s3.sh down; \
	  if [ $$rc = 0 ]; then FUZZTIME=$(TEST_FUZZTIME) scripts/fuzz.sh; rc=$$?; fi; exit $$rc

# How long `make fuzz` runs each fuzz target (a Go duration, or seconds);
# `make test` runs each for TEST_FUZZTIME after its seed corpus.
FUZZTIME ?= 60s
TEST_FUZZTIME ?= 5s
fuzz: ## every fuzz target for FUZZTIME each (default 60s): executions and new coverage per target
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# The long chaos run: more kills, more data, longer outages than the short
# one `make test` runs; writes the report to chaos/REPORT.md.
chaos: deps build ## the long chaos run against the test broker and S3 server, report in chaos/REPORT.md
	@$(TEST_KAFKA) scripts/kafka.sh up >/dev/null
	@S3_PORT=$(TEST_S3_PORT) scripts/s3.sh up >/dev/null
	@set -o pipefail; KPIPE_CHAOS_LONG=1 KPIPE_CHAOS_REPORT=$(CURDIR)/chaos/REPORT.md \
	  KPIPE_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) KPIPE_TEST_S3=http://127.0.0.1:$(TEST_S3_PORT) \
	  KPIPE_PLUGIN_DIR=$(CURDIR)/bin/plugins \
	  $(GO) test -race -count=1 -timeout 60m -v ./chaos/ ; rc=$$?; \
	  $(TEST_KAFKA) scripts/kafka.sh down; S3_PORT=$(TEST_S3_PORT) scripts/s3.sh down; exit $$rc

test-short: build ## the tests that need no broker
	$(GO) test -short -count=1 ./...

demo: deps build ## start a broker, seed, back up, restore a time window, print counts (STORAGE=s3: into a local S3 server, encrypted)
	@STORAGE=$(STORAGE) bash scripts/demo.sh

# The reference tool `make bench` compares kpipe with (OSO kafka-backup), when
# present; empty skips its rows. BENCH_FLAGS adds kpipe-bench flags, e.g.
# BENCH_FLAGS="--only backup/fresh --runs 3".
PEER ?= $(wildcard ../shared/peer/kafka-backup)
# Where `make demo` keeps its backup: fs (a folder) or s3 (scripts/s3.sh).
STORAGE ?= fs
BENCH_FLAGS ?=
bench: deps build ## kpipe (fs and s3) vs the reference tool vs bare franz-go: backup, restore, PITR, deep validation (bench/RESULTS.md)
	$(GO) build -o bin/kpipe-bench ./bench/cmd/kpipe-bench
	@$(TEST_KAFKA) scripts/kafka.sh up >/dev/null
	@S3_PORT=$(TEST_S3_PORT) scripts/s3.sh up >/dev/null
	@$(TEST_KAFKA) scripts/kafka.sh security >bin/kafka-security.env
	@bin/kpipe-bench --bootstrap 127.0.0.1:$(TEST_KAFKA_PORT) --peer "$(PEER)" --s3 http://127.0.0.1:$(TEST_S3_PORT) \
	  --kafka-security bin/kafka-security.env \
	  --kpipe bin/kpipe --plugin-dir bin/plugins --out bench/RESULTS.md \
	  --kafka-version "$$(sed -n 's/^readonly KAFKA_VERSION=\([^ ]*\).*/\1/p' scripts/kafka.sh)" \
	  $(BENCH_FLAGS) ; rc=$$?; \
	  $(TEST_KAFKA) scripts/kafka.sh down; S3_PORT=$(TEST_S3_PORT) scripts/s3.sh down; exit $$rc

kafka-up: deps ## start the local broker on 127.0.0.1:9092 (KAFKA_PORT to change)
	@scripts/kafka.sh up

kafka-down: ## stop the local broker
	@scripts/kafka.sh down

s3-up: ## start the local S3 server on http://127.0.0.1:9000 (S3_PORT to change), bucket kpipe, keys kpipe / kpipe-secret
	@scripts/s3.sh up

s3-down: ## stop the local S3 server
	@scripts/s3.sh down

proto: ## regenerate sdk/proto from plugin.proto
	@bash scripts/proto.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin .kpipe
