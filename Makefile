# cartlift — the two commands a newcomer needs:
#   make demo   runs everything on the embedded default, with live progress
#   make test   runs every test
SHELL := /bin/bash
GO    ?= go
BIN   := bin/cartlift
PKGS  := ./...
# How long `make demo` runs; Ctrl-C stops it earlier, with the summary.
DEMO_DURATION ?= 60s
DEMO_RATE     ?= 400
# More `cartlift demo` flags, e.g. DEMO_FLAGS='-effect 0.10'.
DEMO_FLAGS    ?=

.PHONY: all build demo test test-short test-race bench bench-e2e lint fuzz clean tools email-screenshots report-screenshots shop-screenshots screenshots

all: build

build:
	$(GO) build -o $(BIN) ./cmd/cartlift

demo: build tools
	CARTLIFT_FLOWS=$${CARTLIFT_FLOWS:-deploy/flows/demo.yaml} \
	CARTLIFT_DATA_DIR=$${CARTLIFT_DATA_DIR:-./data/demo} \
	./$(BIN) demo -duration $(DEMO_DURATION) -rate $(DEMO_RATE) $(DEMO_FLAGS)

# Every test: unit, golden, property, fuzz seeds, and the integration tests
# against an in-process Kafka-protocol broker and subprocesses of the binary,
# the actions tests against a real SMTP server (Mailpit, see `tools`) and
# the analytics tests against a real ClickHouse server: CLICKHOUSE_ADDR when
# set, else a clickhouse-server the tests start from deploy/clickhouse/;
# with -tags chdb, the analytics compatibility test runs every SQL statement
# on that server and on chDB (ClickHouse 26.7 in-process, CHDB_LIB_PATH) and
# fails when their answers differ, or when the library cannot be loaded.
test: lint tools
	$(GO) vet -tags chdb ./analytics
	CARTLIFT_CLICKHOUSE_DIR=$(CURDIR)/build/clickhouse CHDB_LIB_PATH=$$(deploy/clickhouse/install-chdb.sh $(CURDIR)/build/chdb) \
		$(GO) test -tags chdb -count=1 -timeout 20m $(PKGS)

# Test tools: Mailpit (the SMTP server of the actions tests), installed into
# $(go env GOPATH)/bin when neither $PATH nor that directory has it; and
# clickhouse-server (Debian's package) unless CLICKHOUSE_ADDR names a server;
# and libchdb.so (chDB, npm's @chdb/lib-linux-x64-gnu, pinned) under
# build/chdb unless CHDB_LIB_PATH names one.
tools:
	command -v mailpit >/dev/null || test -x "$$($(GO) env GOPATH)/bin/mailpit" || $(GO) install github.com/axllent/mailpit@v1.33.1
	deploy/clickhouse/install.sh
	deploy/clickhouse/install-chdb.sh $(CURDIR)/build/chdb >/dev/null

# The concurrent packages under the race detector (slower; run before a release).
test-race:
	$(GO) test -race -count=1 -timeout 20m ./processor ./analytics ./cmd/...

test-short:
	$(GO) test -count=1 -short $(PKGS)

# Microbenchmarks of the hot paths, then the end-to-end load through the
# Kafka protocol (broker in a separate process, processor on one core).
bench: tools
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./events ./projections ./processor
	$(GO) test -run '^$$' -bench SinkInsert -benchtime 10x ./analytics
	$(GO) test -run '^$$' -bench SinkThroughKafka -benchtime 500000x ./analytics
	$(MAKE) bench-e2e

bench-e2e: build
	@set -e; dir=$$(mktemp -d); \
	CARTLIFT_BROKER_ADDR=127.0.0.1:19092 CARTLIFT_DATA_DIR=$$dir ./$(BIN) broker >/dev/null 2>&1 & bpid=$$!; \
	trap 'kill $$bpid 2>/dev/null; wait $$bpid 2>/dev/null; rm -rf $$dir' EXIT; \
	for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/19092) 2>/dev/null && break; sleep 0.1; done; \
	GOMAXPROCS=1 ./$(BIN) load -brokers 127.0.0.1:19092 -events $${LOAD_EVENTS:-1000000}

# Screenshots of the English and German reminder emails at a phone (400 px)
# and a desktop (1000 px) width with headless Chromium (Debian's chromium
# package), into build/screenshots/; `make test` does not need Chromium.
email-screenshots:
	command -v $${CHROMIUM:-chromium} >/dev/null || { echo "needs chromium: apt-get install -y chromium"; exit 1; }
	$(GO) run ./actions/emailpreview -out build/screenshots -chromium $${CHROMIUM:-chromium} -widths 400,1000 -height 1100

# Screenshots of the HTML recovery report at 1400 and 800 px with headless
# Chromium, every table expanded, into build/screenshots/report-*.png: a
# sample report made to stress the layout (four currencies, seven-digit
# revenue, long flow names), or REPORT_JSON=file from
# `cartlift report --format json`. `make test` does not need Chromium.
report-screenshots:
	command -v $${CHROMIUM:-chromium} >/dev/null || { echo "needs chromium: apt-get install -y chromium"; exit 1; }
	$(GO) run ./analytics/reportpreview -out build/screenshots -chromium $${CHROMIUM:-chromium} -widths 1400,800 $${REPORT_JSON:+-json "$$REPORT_JSON"}

# The demo shop's cart page (where the emails' resume links land in
# `make demo`) at 1400 and 800 px, from TestDemoShop's page, into
# build/screenshots/shop-*.png. `make test` does not need Chromium.
shop-screenshots:
	command -v $${CHROMIUM:-chromium} >/dev/null || { echo "needs chromium: apt-get install -y chromium"; exit 1; }
	mkdir -p build/screenshots
	CARTLIFT_SHOP_PREVIEW=$(CURDIR)/build/screenshots/shop.html $(GO) test -count=1 -run '^TestDemoShop$$' ./cmd/cartlift >/dev/null
	for w in 1400 800; do $${CHROMIUM:-chromium} --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot=build/screenshots/shop-$$w.png --window-size=$$w,900 file://$(CURDIR)/build/screenshots/shop.html 2>/dev/null; done
	@echo "build/screenshots/shop-1400.png build/screenshots/shop-800.png"

# All three: the report, the emails and the shop page.
screenshots: report-screenshots email-screenshots shop-screenshots

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./events
	$(GO) test -run '^$$' -fuzz FuzzApply -fuzztime 60s ./projections
	$(GO) test -run '^$$' -fuzz FuzzTranslate -fuzztime 60s ./events/emporix

clean:
	rm -rf bin data build
