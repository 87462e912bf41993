#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZTIME each (default 60s;
# a Go duration, or seconds) and prints, per target, its executions and the
# new inputs it found that reach new code ("new coverage"). Exits non-zero
# when a target finds a crash, a hang or an out-of-memory; the input that
# did it is then in the package's testdata/fuzz/TARGET, to become a
# regression test.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
time=${FUZZTIME:-60s}
[[ $time =~ ^[0-9]+$ ]] && time="${time}s"

dirs=$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./.cache/' | xargs -n1 dirname | sort -u)
printf '%-34s %-20s %14s %14s  %s\n' PACKAGE TARGET EXECUTIONS "NEW COVERAGE" RESULT
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for dir in $dirs; do
	for target in $($GO test -list '^Fuzz' "$dir" | grep '^Fuzz'); do
		fuzz() { $GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -fuzzminimizetime 200x "$dir" >"$log" 2>&1; }
		fuzz
		rc=$?
		note=
		# The fuzzing engine itself can fail without an input to blame
		# (a worker it lost at the deadline): that is run once more, and
		# said. A failure with an input is never retried.
		if ((rc != 0)) && ! grep -q 'Failing input written' "$log"; then
			fuzz
			rc=$?
			note=" (engine error, run again)"
		fi
		last=$(grep -E 'execs: [0-9]+' "$log" | tail -1)
		execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
		found=$(sed -nE 's/.*new interesting: ([0-9]+).*/\1/p' <<<"$last")
		result="ok$note"
		if ((rc != 0)); then
			result=FAILED
			failed=1
		fi
		printf '%-34s %-20s %14s %14s  %s\n' "${dir#./}" "$target" "${execs:-0}" "${found:-0}" "$result"
		if ((rc != 0)); then
			sed -n '/--- FAIL\|panic:\|fatal error\|Failing input\|fuzz: elapsed.*error/,+12p' "$log" | head -40 | sed 's/^/    /'
		fi
	done
done
exit $failed
