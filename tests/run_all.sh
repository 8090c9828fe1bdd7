#!/bin/sh
# Runs each cmocka test binary, echoes its output, and prints one closing line with the
# totals. Exits non-zero if any binary failed (or crashed), or, with GUARD_REQUIRE_SHARED set
# (to anything but 0), if any test was skipped.
passed=0; failed=0; skipped=0; bad=0
for t in "$@"; do
    echo "==== $t"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); echo "!!!! $t exited with status $rc"; fi
    [ $rc -ne 0 ] && bad=1
done
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$skipped" -gt 0 ] && [ -n "${GUARD_REQUIRE_SHARED:-}" ] && [ "${GUARD_REQUIRE_SHARED}" != 0 ]; then
    echo "GUARD_REQUIRE_SHARED is set: $skipped skipped test(s) count as failures"
    bad=1
fi
exit $bad
