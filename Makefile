# The two commands of the README, each doing the whole set-up on a fresh Debian 12:
#   make run    install what is missing, build, start sluice
#   make test   install what is missing, build, run every test (ends with CTest's summary)
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps configure build test run bench bench-http bench-redis bench-gateway fuzz format clean

all: build

deps:
	@scripts/install-deps.sh

# Ninja when it is there (install-deps puts it there); a build directory keeps the
# generator it was first configured with.
configure: deps
	@if [ ! -f $(BUILD_DIR)/CMakeCache.txt ]; then \
	  gen="Unix Makefiles"; command -v ninja >/dev/null 2>&1 && gen=Ninja; \
	  cmake -S . -B $(BUILD_DIR) -G "$$gen" -DCMAKE_BUILD_TYPE=$(BUILD_TYPE); \
	fi

build: configure
	cmake --build $(BUILD_DIR) --parallel $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --parallel $(JOBS)

# sluice on the embedded quickstart config (examples/quickstart.yaml), in-memory
# store: requests on 127.0.0.1:8080, metrics on 127.0.0.1:9090. Ctrl-C stops it.
run: build
	$(BUILD_DIR)/sluice serve

bench: build
	bench/run.sh

# sluice against nginx and HAProxy over HTTP, each pinned to one core, wrk on the other
# (installs nginx, haproxy and wrk when missing).
bench-http: build
	bench/http_peers.sh

# sluice's Redis store against a one-key EVALSHA token bucket (redis-benchmark -P 16):
# Redis CPU per decision with Redis busy (redis_capacity.sh, about a minute), then
# through the HTTP server against the memory store and in a flood (redis_store.sh,
# about 4.5 minutes); each on a redis-server of its own (installs wrk, redis-server
# and redis-tools when missing).
bench-redis: build
	bench/redis_capacity.sh
	bench/redis_store.sh

# Gateway mode against nginx (proxy_pass + limit_req) and HAProxy (stick table), one
# worker each on one core, in front of the same nginx upstream: bench/gateway.sh.
bench-gateway: build
	bench/gateway.sh

fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
