#!/bin/sh
# tests/fuzz/run.sh DIR SECONDS TARGET...: run each libFuzzer binary DIR/fuzz_TARGET for SECONDS,
# one after the other (CI machines have 2 cores shared with the rest of the build).
# New coverage goes to DIR/corpus/TARGET (the committed seeds in tests/fuzz/corpus/TARGET and the
# saved findings in tests/fuzz/regressions/TARGET are read only); a finding is written to
# DIR/artifacts/TARGET/ and fails the run. Prints one line per target with libFuzzer's final
# execution count, and a closing "N passed, N failed" line.
dir=$1; secs=$2; shift 2
passed=0; failed=0
for t in "$@"; do
    bin="$dir/fuzz_$t"
    mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t" "$dir/logs"
    set -- "$dir/corpus/$t" "tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/regressions/$t" ] && set -- "$@" "tests/fuzz/regressions/$t"
    dict=""
    [ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
    log="$dir/logs/$t.log"
    # -timeout: an input taking 25 s is a hang; -rss_limit_mb: a hostile input must not need 2 GB.
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/$t/" $dict "$@" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "fuzz $t: ok, ${execs:-?} executions in ${secs}s, $cov"
    else
        failed=$((failed + 1))
        echo "fuzz $t: FAILED (status $rc) after ${execs:-?} executions; log $log, input in $dir/artifacts/$t/"
        grep -E 'ERROR|SUMMARY|INVARIANT|runtime error' "$log" | head -20
        echo "  to keep it as a regression test: cp $dir/artifacts/$t/<file> tests/fuzz/regressions/$t/"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
