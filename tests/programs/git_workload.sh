#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# git_workload.sh - build a git repository and inspect it, for run_programs.sh.
#
# Run in an empty directory.  Creates repo/ with a few hundred files over 50
# commits (a feature branch, renames, deletions, a --no-ff merge), then prints
# git log --stat, a graph, diffs between commits, and runs git gc, git fsck
# --full --strict and git archive.  Names, e-mails and dates are fixed and no
# user or system configuration is read, so every commit hash - and the whole
# output - is the same on every run.  Every process here (bash, git and its
# helpers, awk) inherits the caller's environment, LD_PRELOAD included.
set -euo pipefail

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME=$PWD
export GIT_AUTHOR_NAME="Ada Lovelace" GIT_AUTHOR_EMAIL=ada@example.org
export GIT_COMMITTER_NAME="Charles Babbage" GIT_COMMITTER_EMAIL=charles@example.org
export LC_ALL=C TZ=UTC

when() # commit number -> a fixed date
{
	local ts=$((1700000000 + $1 * 3600))
	export GIT_AUTHOR_DATE="$ts +0000" GIT_COMMITTER_DATE="$ts +0000"
}

# write_files COMMIT FIRST COUNT: (re)write COUNT files from index FIRST, content
# depending on the commit, in one awk process.
write_files()
{
	awk -v c="$1" -v first="$2" -v count="$3" 'BEGIN {
		for (i = first; i < first + count; i++) {
			f = sprintf("src/d%02d/file%04d.txt", i % 12, i)
			for (l = 0; l < 30 + i % 40; l++)
				printf("line %d of file %d: value %d, rev %d\n", l, i,
				       (i * 7919 + l * 104729 + c * 31) % 1000003, (l % 5 == 0) ? c : 0) > f
			close(f)
		}
	}'
}

mkdir repo
cd repo
git init -q -b main
git config gc.auto 0
git config maintenance.auto false
git config core.autocrlf false
mkdir -p src/d{00..11} docs

for c in $(seq 1 50); do
	when "$c"
	if [ "$c" -eq 20 ]; then
		git checkout -q -b feature
	fi
	if [ "$c" -ge 20 ] && [ "$c" -lt 40 ] && [ $((c % 2)) -eq 0 ]; then
		git checkout -q main
	elif [ "$c" -ge 20 ] && [ "$c" -lt 40 ]; then
		git checkout -q feature
	fi
	if [ "$c" -eq 40 ]; then
		git checkout -q main
		git merge -q --no-ff -m "merge feature into main" feature
		continue
	fi
	if [ "$c" -ge 20 ] && [ "$c" -lt 40 ] && [ $((c % 2)) -eq 1 ]; then
		# feature: its own files, so the merge is clean
		mkdir -p feature
		printf 'feature note %d\n' "$c" >>"feature/notes-$((c % 5)).txt"
		write_files "$c" $((400 + c * 3)) 6
	else
		write_files "$c" $(((c * 37) % 300)) 12
		printf '# Chapter %d\n\nText of commit %d.\n' "$c" "$c" >"docs/ch$((c % 9)).md"
	fi
	if [ "$c" -eq 1 ]; then
		write_files 1 0 300
	fi
	if [ $((c % 10)) -eq 5 ]; then
		git rm -q "src/d$(printf %02d $((c % 12)))/file$(printf %04d $((c * 3)))".txt 2>/dev/null ||
			true
	fi
	if [ $((c % 10)) -eq 7 ] && [ -f "src/d00/file0000.txt" ] && [ "$c" -lt 20 ]; then
		git mv src/d00/file0000.txt "docs/moved-$c.txt"
	fi
	git add -A
	git commit -q -m "commit $c" -m "Body of commit $c: $(git status --porcelain | wc -l) paths staged."
done
git tag -a v1.0 -m "release 1.0" HEAD

echo "== log --stat"
git log --stat --format='%H %an <%ae> %ad%n%cn %cd%n    %s' --date=iso-strict
echo "== graph"
git log --graph --oneline --all --decorate
echo "== diff --stat HEAD~30 HEAD"
git diff --stat HEAD~30 HEAD
echo "== diff main~25 main~5 -- src/d03 docs"
git diff main~25 main~5 -- src/d03 docs
echo "== diff -M --summary (renames)"
git diff -M --summary "$(git rev-list --max-parents=0 HEAD)" HEAD | sed -n '1,50p'
echo "== blame"
git blame -s docs/ch1.md
echo "== grep"
git grep -c 'rev 4[0-9]' HEAD -- src | sed -n '1,20p'
echo "== gc"
git gc --quiet
git count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
echo "== fsck"
git fsck --full --strict --no-progress 2>&1
echo "== rev-list"
git rev-list --objects --all | wc -l
git rev-parse HEAD "HEAD^{tree}" v1.0
echo "== archive"
git archive --format=tar v1.0 | sha256sum
git archive --format=tar.gz --prefix=p/ HEAD~10 | gzip -dc | sha256sum
