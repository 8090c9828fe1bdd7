# Plain `make` builds ./run and ./export; `make test` runs every test (cmocka).
# One portable binary: SIMD kernels are compiled per function with target attributes and
# chosen at start-up (quant.c), so no -march=native is needed.
CC      ?= cc
OPT     ?= -O2
# Extra flags from the command line (CFLAGS=-Werror) add to these rather than replace them.
# -ffp-contract=off: a*b + c written in C stays two roundings (the kernels reproduce the scalar
# references operation for operation; GCC's ISO mode does this anyway, clang must be told).
ALL_CFLAGS = $(OPT) -g -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread -ffp-contract=off $(CFLAGS)
LDLIBS  += -lm -pthread
GUARD_SHARED ?= ../shared
export GUARD_SHARED

# What ./run links: the reader, the forward pass, the tokenizer's encode/decode, the prompt
# formats and the classifier (README "Read the code in this order").
RUNTIME_SRC := util.c json.c report.c http.c quant.c kernels_x86.c kernels_neon.c pool.c guardbin.c model.c classify.c tokenizer.c unicode_tables.c template.c chat.c
# What only ./export links on top: every importer, tokenizer building and the guard.bin writer.
IMPORT_SRC  := $(wildcard import/*.c)
# Tests, benchmarks and fuzz targets link both (they build their fixtures with the writers).
LIB_SRC     := $(RUNTIME_SRC) $(IMPORT_SRC)
BUILD   ?= build
RUNTIME_OBJ := $(RUNTIME_SRC:%.c=$(BUILD)/%.o)
IMPORT_OBJ  := $(IMPORT_SRC:%.c=$(BUILD)/%.o)
LIB_OBJ     := $(RUNTIME_OBJ) $(IMPORT_OBJ)
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/bench_*.c))

all: run export

$(BUILD)/%.o: %.c $(wildcard *.h import/*.h) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $(BUILD)/tests $(BUILD)/bench $(BUILD)/import

run: $(BUILD)/run.o $(BUILD)/server.o $(RUNTIME_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

export: $(BUILD)/export.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(LIB_OBJ) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(LIB_OBJ) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: bench/%.c $(LIB_OBJ) | $(BUILD)
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(LIB_OBJ) $(LDLIBS)

test: all $(TESTS)
	@sh tests/run_all.sh $(TESTS)

# The server under load (tests/load_server.c): bounded in requests and time, loopback only.
test-load: all $(BUILD)/tests/load_server
	@sh tests/run_all.sh $(BUILD)/tests/load_server

# The runtime boundary (README): ./run defines no importer, tokenizer-building or writer symbol.
BOUNDARY_SYMS := gguf_open|hf_open|meta_open|source_open|tok_from_hf|tok_build|tok_serialize|gbw_[a-z_]*
check-boundary: run
	@bad=$$(nm run | awk '{print $$NF}' | grep -xE '$(BOUNDARY_SYMS)' || true); \
	if [ -n "$$bad" ]; then echo "check-boundary: ./run links export-only code:" $$bad; exit 1; fi; \
	echo "check-boundary: ./run links no importer or writer symbol"

# Benchmarks print tables; speed targets live here, never in timed tests. bench_model: every
# dtype at the Llama Guard 3 1B shape, then its INT4 release (q4), q8 and q4 at the 8B shape (its
# f32 file alone is 32 GB) and at the Llama Guard 4 12B shape (q8 ~12 GB).
bench: all $(BENCHES)
	@for b in $(filter-out %/bench_model %/bench_server,$(BENCHES)); do echo "==== $$b"; $$b || exit 1; done
	@echo "==== $(BUILD)/bench/bench_model" && $(BUILD)/bench/bench_model -m 1b,int4 && $(BUILD)/bench/bench_model -m 8b -d q8,q4 && $(BUILD)/bench/bench_model -m 12b -d q8,q4
	@$(MAKE) --no-print-directory bench-server

# The server row: ./run --serve on the 1B q8 file (bench/bench_server.c).
bench-server: all $(BUILD)/bench/bench_model $(BUILD)/bench/bench_server
	@echo "==== $(BUILD)/bench/bench_server (Llama Guard 3 1B shape, q8)"
	@$(BUILD)/bench/bench_model -m 1b -d q8 -w -o $(BUILD) && $(BUILD)/bench/bench_server $(BUILD)/bench-1b-q8.bin; rc=$$?; rm -f $(BUILD)/bench-1b-q8.bin; exit $$rc

# Extra targets owned by the kernel work (NEON cross-test under qemu).
-include quant.mk
# Sanitizer and fuzzing targets (make sanitize, make fuzz; README "Reliability").
-include hardening.mk

# make install PREFIX=/usr/local: the two programs under names that do not collide with the
# shell (`export` is a builtin). DESTDIR stages a package.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
install: all
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 run $(DESTDIR)$(BINDIR)/llama-guard
	install -m 755 export $(DESTDIR)$(BINDIR)/llama-guard-export

clean:
	rm -rf $(BUILD) run export

.PHONY: all test test-load bench bench-server install clean check-boundary
