#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_preload.sh - kmm in a program not linked with it: LD_PRELOAD and the
# `kmm run` command.
#
#   test_preload.sh PROG DSO LIBKMM_SO KMM_CLI WORK_DIR
#
# PROG is preload_prog (constructors and destructors that allocate, threads
# started before main, a dlopen()ed DSO whose blocks cross the boundary).
#   1. PROG alone runs on the C library's malloc (kmm absent).
#   2. LD_PRELOAD=LIBKMM_SO KMM_STATS=1 PROG: kmm is its malloc, it succeeds,
#      the destructors ran, and kmm's report is on stderr.
#   3. KMM_CLI run --stats -- PROG: the same through the command; without
#      --stats no report; the command's exit status is PROG's.
#   4. KMM_CLI's errors: a command that does not exist -> 127 and a message;
#      an unknown option, an unknown subcommand, no command -> 2 and usage;
#      --lib with a missing file -> 127.
set -u

if [ $# -ne 5 ]; then
	echo "usage: $0 PROG DSO LIBKMM_SO KMM_CLI WORK_DIR" >&2
	exit 2
fi
prog=$1 dso=$2 lib=$3 cli=$4 work=$5
checks=0
fail()
{
	echo "test_preload: FAILED: $*"
	exit 1
}
pass() { checks=$((checks + 1)); }
show() { echo "--- stdout:"; cat "$work/out"; echo "--- stderr:"; cat "$work/err"; }

mkdir -p "$work" || fail "cannot create $work"
for f in "$prog" "$dso" "$lib" "$cli"; do
	[ -e "$f" ] || fail "missing $f (build the test targets first)"
done
unset KMM_STATS KMM_LIB LD_PRELOAD

# expect NAME STATUS OUTLINE STATS(yes/no) CMD...: run CMD, check its exit
# status, that stdout has OUTLINE (unless empty), and whether the report is there.
expect()
{
	local name=$1 want=$2 outline=$3 stats=$4 rc
	shift 4
	"$@" >"$work/out" 2>"$work/err"
	rc=$?
	[ "$rc" -eq "$want" ] || { show; fail "$name: exit status $rc, want $want"; }
	pass
	if [ -n "$outline" ]; then
		grep -qxF -- "$outline" "$work/out" || { show; fail "$name: stdout lacks \"$outline\""; }
		pass
	fi
	if [ "$stats" = yes ]; then
		for s in "kmm 0" "slabinfo - version: 2.1" "-- /proc/buddyinfo --" "bytes in use" \
			"allocations per size class"; do
			grep -qF -- "$s" "$work/err" || { show; fail "$name: stderr lacks kmm's report (\"$s\")"; }
			pass
		done
		# The report comes after the program's own destructor (kmm is finalized last).
		local d r
		d=$(grep -n "preload_prog: destructor done" "$work/err" | head -1 | cut -d: -f1)
		r=$(grep -n "slabinfo - version: 2.1" "$work/err" | head -1 | cut -d: -f1)
		if [ -n "$d" ] && [ -n "$r" ] && [ "$d" -gt "$r" ]; then
			show
			fail "$name: kmm printed its report before the program's destructor ran"
		fi
		pass
	elif [ "$stats" = no ]; then
		if grep -qF "slabinfo" "$work/err"; then
			show
			fail "$name: kmm's report printed without KMM_STATS"
		fi
		pass
	fi
}

# 1. Control: the C library's malloc.
expect "plain run" 0 "preload_prog: ok (libc)" no "$prog" libc "$dso"
grep -qF "preload_prog: destructor done" "$work/err" || fail "plain run: the destructor did not run"
pass

# 2. LD_PRELOAD.
expect "LD_PRELOAD" 0 "preload_prog: ok (kmm)" yes env LD_PRELOAD="$lib" KMM_STATS=1 "$prog" kmm "$dso"
grep -qF "preload_prog: destructor done" "$work/err" || { show; fail "LD_PRELOAD: the destructor did not run"; }
pass
expect "LD_PRELOAD without KMM_STATS" 0 "preload_prog: ok (kmm)" no env LD_PRELOAD="$lib" "$prog" kmm "$dso"
# kmm composes with another preloaded library (kept after kmm by `kmm run`, here by hand).
expect "LD_PRELOAD with the dso too" 0 "preload_prog: ok (kmm)" no \
	env LD_PRELOAD="$lib:$dso" "$prog" kmm "$dso"

# 3. kmm run.
expect "kmm run --stats" 0 "preload_prog: ok (kmm)" yes "$cli" run --stats -- "$prog" kmm "$dso"
grep -qF "preload_prog: destructor done" "$work/err" || { show; fail "kmm run: the destructor did not run"; }
pass
expect "kmm run" 0 "preload_prog: ok (kmm)" no "$cli" run -- "$prog" kmm "$dso"
expect "kmm run (no --)" 0 "preload_prog: ok (kmm)" no "$cli" run "$prog" kmm "$dso"
expect "kmm run --lib" 0 "preload_prog: ok (kmm)" yes "$cli" run --lib "$lib" --stats -- "$prog" kmm "$dso"
expect "kmm run with KMM_LIB" 0 "preload_prog: ok (kmm)" no env KMM_LIB="$lib" "$cli" run -- "$prog" kmm "$dso"
expect "kmm run keeps LD_PRELOAD" 0 "preload_prog: ok (kmm)" no \
	env LD_PRELOAD="$dso" "$cli" run -- "$prog" kmm "$dso"
expect "kmm run: exit status" 7 "" "" "$cli" run -- sh -c 'exit 7'
expect "kmm run: KMM_STATS set" 0 "1" "" "$cli" run --stats -- sh -c 'echo "$KMM_STATS"'
expect "kmm run: LD_PRELOAD set" 0 "" "" "$cli" run -- sh -c 'case "$LD_PRELOAD" in *libkmm.so*) exit 0;; *) exit 1;; esac'

# 4. Errors.
expect "kmm run: missing command" 127 "" "" "$cli" run -- "$work/no-such-command"
grep -qF "kmm: " "$work/err" && grep -qF "no-such-command" "$work/err" ||
	{ show; fail "kmm run: missing command: no message naming it"; }
pass
expect "kmm run: missing command on PATH" 127 "" "" "$cli" run -- kmm-test-no-such-command-on-path
grep -qF "kmm-test-no-such-command-on-path" "$work/err" || { show; fail "no message"; }
pass
expect "kmm: unknown option" 2 "" "" "$cli" run --no-such-option -- true
grep -qF "no-such-option" "$work/err" && grep -qF "usage:" "$work/err" ||
	{ show; fail "kmm: unknown option: no message naming it, or no usage"; }
pass
expect "kmm: unknown subcommand" 2 "" "" "$cli" walk -- true
grep -qF "usage:" "$work/err" || { show; fail "kmm: unknown subcommand: no usage"; }
pass
expect "kmm: no arguments" 2 "" "" "$cli"
expect "kmm run: no command" 2 "" "" "$cli" run --
expect "kmm run: --stats but no command" 2 "" "" "$cli" run --stats
expect "kmm run --lib missing" 127 "" "" "$cli" run --lib "$work/no-such-lib.so" -- true
grep -qF "kmm: " "$work/err" || { show; fail "kmm run --lib missing: no message"; }
pass
expect "kmm --help" 0 "" "" "$cli" --help
grep -qF "usage:" "$work/out" || { show; fail "kmm --help: no usage on stdout"; }
pass

echo "test_preload: $checks checks passed"
exit 0
