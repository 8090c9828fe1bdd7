# Plain `make` builds ./run and ./export; `make test` runs every test (cmocka).
# One portable binary: SIMD kernels are compiled per function with target attributes and
# chosen at start-up (quant.c), so no -march=native is needed.
CC      ?= cc
OPT     ?= -O2
CFLAGS  += $(OPT) -g -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread
LDLIBS  += -lm -pthread
GUARD_SHARED ?= ../shared
export GUARD_SHARED

# Runtime library (everything but the two mains). Files are added here as they land.
LIB_SRC := util.c json.c quant.c guardbin.c model.c tokenizer.c unicode_tables.c template.c chat.c
LIB_SRC := $(wildcard $(LIB_SRC))
BUILD   ?= build
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TESTS   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))

all: run export

$(BUILD)/%.o: %.c $(wildcard *.h) | $(BUILD)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD):
	mkdir -p $(BUILD)/tests

run: $(BUILD)/run.o $(LIB_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

export: $(BUILD)/export.o $(LIB_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(LIB_OBJ) | $(BUILD)
	$(CC) $(CFLAGS) -I. -o $@ $< $(LIB_OBJ) $(LDLIBS) -lcmocka

test: all $(TESTS)
	@sh tests/run_all.sh $(TESTS)

clean:
	rm -rf $(BUILD) run export

.PHONY: all test clean
