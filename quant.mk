# quant.mk: aarch64 cross-test of the NEON kernels, included from the Makefile.
#
#   make test-neon     cross-compiles tests/test_quant.c + the kernels (quant.c, kernels_neon.c,
#                      kernels_x86.c, which is empty there, pool.c) + util.c for aarch64 and runs
#                      it under qemu twice: as a dotprod-capable core (tests "neon" and
#                      "neon-dotprod" against "scalar") and as a Cortex-A53 (no dotprod: checks
#                      that the runtime detection falls back to plain "neon").
#
# Needs (Debian/Ubuntu): apt-get install -y gcc-aarch64-linux-gnu qemu-user
# No arm64 libcmocka is needed: the test builds with -DQUANT_TEST_PLAIN, a small stand-in that
# prints "N passed, N failed" and exits non-zero on failure.
ARM_CC    ?= aarch64-linux-gnu-gcc
ARM_QEMU  ?= qemu-aarch64
ARM_SYSROOT ?= /usr/aarch64-linux-gnu
ARM_BUILD ?= build-arm64

ARM_SRC   := quant.c kernels_neon.c kernels_x86.c pool.c util.c
$(ARM_BUILD)/test_quant: tests/test_quant.c $(ARM_SRC) quant.h kernels.h util.h quant.mk
	@mkdir -p $(ARM_BUILD)
	$(ARM_CC) -O2 -g -std=c11 -Wall -Wextra -D_GNU_SOURCE -pthread -ffp-contract=off -DQUANT_TEST_PLAIN -I. \
		-o $@ tests/test_quant.c $(ARM_SRC) -lm -pthread

test-neon: $(ARM_BUILD)/test_quant
	QEMU_CPU=max $(ARM_QEMU) -L $(ARM_SYSROOT) $(ARM_BUILD)/test_quant
	QEMU_CPU=cortex-a53 $(ARM_QEMU) -L $(ARM_SYSROOT) $(ARM_BUILD)/test_quant

.PHONY: test-neon
