#!/usr/bin/env bash
# setup.sh - install what kmm needs to build and test on a fresh Debian machine.
#
# Installs only what is missing, so a rerun on a ready machine does nothing
# (and needs no network).  Runs apt-get as root, or through sudo when the
# caller is not root.
set -euo pipefail

# command -> Debian package that provides it
declare -A cmd_pkg=(
	[cmake]=cmake
	[make]=make
	[gcc]=gcc
	[g++]=g++
	[clang]=clang
	[pkg-config]=pkg-config
	[sqlite3]=sqlite3
	[git]=git
)
# Packages found by name, not by a command: the compiler-rt sanitizer runtimes
# that clang -fsanitize=thread needs (only a Recommends of clang's packages).
# The real-program tests (tests/programs) need Debian's python3 with its own
# regression tests, and GNU time (`command -v time` finds bash's keyword, and
# `command -v python3` may find a pyenv shim, so these go by package name).
pkgs_by_name=(libclang-rt-dev python3 libpython3.11-testsuite time)

missing=()
for cmd in "${!cmd_pkg[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${cmd_pkg[$cmd]}")
done
for pkg in "${pkgs_by_name[@]}"; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "setup.sh: everything is installed"
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	sudo=()
elif command -v sudo >/dev/null 2>&1; then
	sudo=(sudo)
else
	echo "setup.sh: missing ${missing[*]}, and not root nor sudo available to install them" >&2
	exit 1
fi

echo "setup.sh: installing ${missing[*]}"
${sudo[@]+"${sudo[@]}"} apt-get update
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
