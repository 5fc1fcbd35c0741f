# fuzz/fuzz.mk -- fuzz harness builds, included by the top-level Makefile (fuzz/README.md).
#
#   make fuzz              build every harness with clang's libFuzzer + ASan + UBSan and run each
#                          for FUZZ_SECONDS (default 60); fails on any crash, hang, leak or failed
#                          check. FUZZ=name runs one harness only.
#   make test-fuzz-replay  replay every seed and regression file through every harness, built
#                          with the normal compiler and without libFuzzer (part of test-unit, so
#                          of `make test`, and with the sanitizers of `make test-asan`).
#
# Replay binaries: $(BUILD)/fuzz/replay_<name>, from the same harness source as the fuzzer, with
# fuzz/replay_main.c for main() and the objects the normal build already made. libFuzzer builds:
# $(BUILD)/fuzz/lf/fuzz_<name>, every source compiled again with coverage instrumentation.
# A fuzzing run writes what it discovers under $(BUILD)/fuzz/lf/work/<name> (never into the
# seed corpus) and a crashing input to $(BUILD)/fuzz/lf/crashes/<name>-crash-<sha1>.

FUZZ_NAMES := conf admin_request admin_query admin_utf8 resume ring
# Harnesses of parsers still being written elsewhere join once their source is there.
FUZZ_NAMES += $(if $(wildcard ws-worker/worker_claims.c),claims)
FUZZ_NAMES += $(if $(wildcard ws-worker/worker_rfc6455_rx.c),rfc6455_rx)
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ         ?= $(FUZZ_NAMES)

# What each harness links besides itself: objects of the normal build (replay) ...
FUZZ_ADMIN_SRC := $(filter-out admin-cgi/admin.c,$(ADMIN_SRC))
FUZZ_SRC_conf          := $(COMMON_SRC)
FUZZ_SRC_ring          := $(COMMON_SRC) $(SHM_SRC)
FUZZ_SRC_resume        := ws-worker/worker_resume.c
FUZZ_SRC_admin_request := $(FUZZ_ADMIN_SRC) $(COMMON_SRC) $(SHM_SRC)
FUZZ_SRC_admin_query   := $(FUZZ_SRC_admin_request)
FUZZ_SRC_admin_utf8    := $(FUZZ_SRC_admin_request)
FUZZ_SRC_claims        := ws-worker/worker_claims.c
FUZZ_SRC_rfc6455_rx    := ws-worker/worker_rfc6455_rx.c
FUZZ_LIBS_admin_request := $(FCGI_LIBS)
FUZZ_LIBS_admin_query   := $(FCGI_LIBS)
FUZZ_LIBS_admin_utf8    := $(FCGI_LIBS)
FUZZ_LIBS_claims        := $(shell pkg-config --libs jansson) -lm
FUZZ_ASSETS_OBJ = $(if $(findstring admin_,$(1)),$(2)/admin-cgi/admin_assets.o)

FUZZ_REPLAYS := $(patsubst %,$(BUILD)/fuzz/replay_%,$(FUZZ_NAMES))
FUZZ_LF      := $(BUILD)/fuzz/lf
FUZZ_INC     := -Iadmin-cgi -Iws-worker $(FCGI_CFLAGS)

# ... or the same sources compiled for libFuzzer. Other people's files get no -Werror here:
# clang warns about things gcc does not (the build proper is gcc's, with -Werror).
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -pthread -fno-strict-aliasing -Icommon -Ishm \
               $(FUZZ_INC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP
FUZZ_WARN   := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes

.PHONY: fuzz fuzz-build test-fuzz-replay

$(BUILD)/fuzz/%.o: CFLAGS += $(FUZZ_INC)

# FUZZ_DIRS: the seed corpus (must not be empty) and the regressions (may not exist yet).
$(BUILD)/fuzz/replay_main_%.o: fuzz/replay_main.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -DFUZZ_DIRS='"$(CURDIR)/fuzz/corpus/$*:$(CURDIR)/fuzz/regressions/$*"' \
	    -c -o $@ $<

$(FUZZ_LF)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wall -Wextra -Wno-format-nonliteral -c -o $@ $<

$(FUZZ_LF)/obj/admin-cgi/admin_assets.o: $(BUILD)/admin-cgi/admin_assets.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_LF)/harness/%.o: fuzz/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -c -o $@ $<

define FUZZ_template
$(BUILD)/fuzz/replay_$(1): $(BUILD)/fuzz/fuzz_$(1).o $(BUILD)/fuzz/replay_main_$(1).o \
        $(call obj,$(FUZZ_SRC_$(1))) $(call FUZZ_ASSETS_OBJ,$(1),$(BUILD))
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $(FUZZ_LIBS_$(1)) $$(LDLIBS_RT)

$(FUZZ_LF)/fuzz_$(1): $(FUZZ_LF)/harness/fuzz_$(1).o \
        $(patsubst %.c,$(FUZZ_LF)/obj/%.o,$(FUZZ_SRC_$(1))) $(call FUZZ_ASSETS_OBJ,$(1),$(FUZZ_LF)/obj)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $$@ $$^ $(FUZZ_LIBS_$(1)) -lrt
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call FUZZ_template,$(n))))

test-fuzz-replay: $(FUZZ_REPLAYS)
	@for t in $(FUZZ_REPLAYS); do echo "== $$t"; $$t || exit 1; done

# The replays run with the unit tests (the recipe of test-unit lists them too).
test-unit: $(FUZZ_REPLAYS)

fuzz-build: $(patsubst %,$(FUZZ_LF)/fuzz_%,$(FUZZ))

# Each harness: seeds and regressions first, then new inputs for FUZZ_SECONDS. The full libFuzzer
# log goes to $(FUZZ_LF)/log/<name>.txt; the summary line shows runs, exec/s and coverage.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_LF)/log $(FUZZ_LF)/crashes
	@for n in $(FUZZ); do \
	    mkdir -p $(FUZZ_LF)/work/$$n; \
	    dict=; [ -f fuzz/dict/$$n.dict ] && dict=-dict=fuzz/dict/$$n.dict; \
	    regs=; [ -d fuzz/regressions/$$n ] && regs=fuzz/regressions/$$n; \
	    log=$(FUZZ_LF)/log/$$n.txt; \
	    echo "== fuzz $$n ($(FUZZ_SECONDS) s)"; \
	    if ! $(FUZZ_LF)/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	            -max_len=8192 -print_final_stats=1 $$dict \
	            -artifact_prefix=$(FUZZ_LF)/crashes/$$n- $(FUZZ_LF)/work/$$n fuzz/corpus/$$n \
	            $$regs >$$log 2>&1; then \
	        tail -n 60 $$log; \
	        echo "fuzz $$n FAILED: input saved as $(FUZZ_LF)/crashes/$$n-*;" \
	             "keep it as fuzz/regressions/$$n/<name> (fuzz/README.md)"; \
	        exit 1; \
	    fi; \
	    grep -E '^#[0-9]+[[:space:]]+DONE' $$log | tail -n 1; \
	    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' $$log | tr '\n' ' '; echo; \
	done
