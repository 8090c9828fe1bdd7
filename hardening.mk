# hardening.mk: sanitizers and fuzzing (included by the Makefile; README "Reliability").
#
#   make sanitize        the whole `make test` and `make test-load` (the server under load) under
#                        AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer), built with
#                        clang in a copy of the tree under build/asan/
#   make fuzz            build every libFuzzer target (tests/fuzz/fuzz_*.c) and run each for
#                        FUZZ_SECONDS (default 60); fails on any finding (crash, leak, timeout, OOM)
#   make fuzz-build      only build them (build/fuzz/fuzz_NAME)
#   make fuzz-seeds      regenerate the committed seed corpora (tests/fuzz/corpus/)
#
# The normal `make test` also runs every corpus and regression input through the same harnesses
# (tests/test_regressions.c), without libFuzzer, so a fixed bug stays fixed on every build.

SAN_CC    ?= clang
FUZZ_CC   ?= clang
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SAN_DIR   ?= $(BUILD)/asan
FUZZ_DIR  ?= $(BUILD)/fuzz
FUZZ_SECONDS ?= 60
# LeakSanitizer on; a sanitizer report ends the process with a non-zero status.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# ==== make sanitize ====
# The tests run ./run and ./export from the directory they are started in, so the simplest build
# that sanitizes everything is a copy of the tree (tracked files plus untracked, non-ignored ones)
# with its own `make test`. Objects live outside the copy, so unchanged files are not rebuilt.
sanitize:
	@command -v $(SAN_CC) >/dev/null || { echo "make sanitize needs $(SAN_CC) (apt-get install clang libclang-rt-dev)"; exit 2; }
	@rm -rf $(SAN_DIR)/src && mkdir -p $(SAN_DIR)/src
	@git ls-files -co --exclude-standard -z | xargs -0 sh -c 'for f; do [ -f "$$f" ] && printf "%s\0" "$$f"; done; true' sh \
		| tar --null -T - -cf - | tar -xf - -C $(SAN_DIR)/src
	$(SAN_ENV) $(MAKE) -C $(SAN_DIR)/src test test-load CC=$(SAN_CC) OPT="-O1 $(SAN_FLAGS)" \
		BUILD=$(abspath $(SAN_DIR))/obj GUARD_SHARED=$(abspath $(GUARD_SHARED))

# ==== make fuzz ====
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_OBJ     := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_CFLAGS  := -O1 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread -ffp-contract=off -I. $(SAN_FLAGS)

$(FUZZ_DIR)/obj/%.o: %.c $(wildcard *.h import/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@GUARD_SHARED=$(abspath $(GUARD_SHARED)) sh tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# ==== seeds ====
$(BUILD)/make_seeds: tests/fuzz/make_seeds.c tests/fuzz/fuzz.h $(LIB_OBJ) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(LIB_OBJ) $(LDLIBS)

fuzz-seeds: $(BUILD)/make_seeds
	$(BUILD)/make_seeds tests/fuzz/corpus

.PHONY: sanitize fuzz fuzz-build fuzz-seeds
