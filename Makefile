# wshub -- top-level build.
#
#   make            build everything into build/ (-Wall -Wextra -Werror)
#   make asan       the same with AddressSanitizer + UBSan into build-asan/
#   make test       unit tests, then the integration suite against real processes
#   make test-asan  the same suite against the sanitizer build
#   make run        install missing Debian packages, build, start the stack behind nginx
#   make format     clang-format every C file in place
#   make install    install under PREFIX (/usr/local) and DESTDIR; make uninstall; make deb
#                   (packaging/install.mk, packaging/README.md)
#
# Libraries come through pkg-config. libev ships no .pc file on Debian 12, hence the fallback.

BUILD   ?= build
CC      ?= cc
PYTHON  ?= /usr/bin/python3
SAN     ?=

PKGS      := libwebsockets fcgi zlib openssl hiredis libjwt
PKG_CHECK := $(shell pkg-config --exists $(PKGS) || echo missing)
ifeq ($(PKG_CHECK),missing)
  $(error missing -dev packages: run scripts/deps.sh (or make run) first)
endif

CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
               -Wmissing-prototypes -Wformat=2 -fno-strict-aliasing -pthread -MMD -MP \
               -Icommon -Ishm
ifeq ($(SAN),1)
  CFLAGS_BASE += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS     += -fsanitize=address,undefined
endif
CFLAGS  += $(CFLAGS_BASE)
LDFLAGS += -pthread
LDLIBS_RT := -lrt

LWS_CFLAGS  := $(shell pkg-config --cflags libwebsockets)
LWS_LIBS    := $(shell pkg-config --libs libwebsockets)
EV_LIBS     := $(shell pkg-config --libs libev 2>/dev/null || echo -lev)
FCGI_CFLAGS := $(shell pkg-config --cflags fcgi)
FCGI_LIBS   := $(shell pkg-config --libs fcgi)

COMMON_SRC := common/log.c common/conf.c
SHM_SRC    := shm/shm.c shm/ring.c shm/conntab.c shm/doorbell.c shm/stats.c
HUB_SRC    := $(wildcard hub/*.c)
WORKER_SRC := $(wildcard ws-worker/*.c)
ADMIN_SRC  := $(filter-out %_test.c,$(wildcard admin-cgi/*.c))
UNIT_TESTS := $(patsubst shm/%.c,$(BUILD)/tests/%,$(wildcard shm/*_test.c)) \
              $(patsubst admin-cgi/%.c,$(BUILD)/tests/%,$(wildcard admin-cgi/*_test.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

BINS := $(BUILD)/wshub $(BUILD)/wshub-worker $(BUILD)/wshub-admin
TOOLS := $(BUILD)/loopcost

.PHONY: all asan test test-unit test-integration test-asan run format check-format clean \
        wsbench test-wsbench
all: $(BINS) $(UNIT_TESTS) $(TOOLS)

$(BUILD)/libwshub.a: $(call obj,$(COMMON_SRC) $(SHM_SRC))
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(BUILD)/wshub: $(call obj,$(HUB_SRC)) $(BUILD)/libwshub.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_RT)

$(BUILD)/wshub-worker: $(call obj,$(WORKER_SRC)) $(BUILD)/libwshub.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LWS_LIBS) $(EV_LIBS) $(LDLIBS_RT)

$(BUILD)/wshub-admin: $(call obj,$(ADMIN_SRC)) $(BUILD)/libwshub.a
	$(CC) $(LDFLAGS) -o $@ $^ $(FCGI_LIBS) $(LDLIBS_RT)

# tools/loopcost: poll() vs epoll cost per wake-up with N idle fds (docs/design.md).
$(BUILD)/loopcost: $(BUILD)/tools/loopcost/loopcost.o
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/tests/%: $(BUILD)/shm/%.o $(BUILD)/libwshub.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_RT)

# admin-cgi unit tests link only the module they test.
$(BUILD)/tests/admin_%_test: $(BUILD)/admin-cgi/admin_%_test.o $(BUILD)/admin-cgi/admin_%.o
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/ws-worker/%.o: CFLAGS += $(LWS_CFLAGS)
$(BUILD)/admin-cgi/%.o: CFLAGS += $(FCGI_CFLAGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c -o $@ $<

asan:
	$(MAKE) BUILD=build-asan SAN=1 all

test: all
	$(MAKE) --no-print-directory test-unit test-integration

test-unit: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $$t || exit 1; done

test-integration: $(BINS)
	WSHUB_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -x tests

test-asan: asan
	$(MAKE) --no-print-directory BUILD=build-asan SAN=1 test-unit test-integration

run:
	scripts/run.sh

# The load generator (tools/wsbench/README.md); its own tests prove its counters can fail.
wsbench:
	$(MAKE) -C tools/wsbench

test-wsbench:
	$(MAKE) -C tools/wsbench test

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
	$(MAKE) -C tools/wsbench clean

# wshubctl, make install / uninstall / deb.
include packaging/install.mk

-include $(shell find $(BUILD) -type f -name '*.d' 2>/dev/null)
