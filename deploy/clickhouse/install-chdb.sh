#!/usr/bin/env bash
# Makes sure libchdb.so (chDB: a current ClickHouse release as a library)
# exists for the compatibility test of `make test` (analytics/compat_test.go),
# which runs every SQL statement cartlift ships on it and on the
# clickhouse-server of the other analytics tests, and compares the answers.
#
# The library comes from npm's package @chdb/lib-linux-x64-gnu, pinned
# below (about 180 MB to download, once); it is unpacked under the
# directory given as the first argument (default build/chdb) and the path of
# libchdb.so is printed on standard output. Linux x86-64 with glibc only:
# that is the only build of the package this uses.
set -euo pipefail

# The pinned package: its version and the SHA-1 of its tarball as the
# registry lists it (npm view @chdb/lib-linux-x64-gnu@VERSION dist.shasum).
VERSION=26.7.3-stable.1
SHASUM=d2905fafd0e0ac0e231cccadd1f0f6d010977297

if [[ -n "${CHDB_LIB_PATH:-}" && -s "$CHDB_LIB_PATH" ]]; then
	echo "$CHDB_LIB_PATH" # a library of the caller's own
	exit 0
fi
root=${1:-build/chdb}
mkdir -p "$root"
root=$(cd "$root" && pwd) # the path printed is absolute
dest="$root/$VERSION"
lib="$dest/libchdb.so"
if [[ -s "$lib" ]]; then
	echo "$lib"
	exit 0
fi
fail() {
	echo "cartlift: no libchdb.so: $1" >&2
	echo "  the compatibility test (analytics/compat_test.go) needs chDB $VERSION;" >&2
	echo "  install npm and run make again, or set CHDB_LIB_PATH to a libchdb.so" >&2
	exit 1
}
[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] || fail "the pinned build is for Linux x86-64 only"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"

echo "cartlift: downloading chDB $VERSION (npm @chdb/lib-linux-x64-gnu, about 180 MB) ..." >&2
tmp=$(mktemp -d "$root/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# npm pack fetches the tarball and checks it against the registry's
# integrity hash; the SHA-1 check pins the exact tarball.
(cd "$tmp" && npm pack --silent "@chdb/lib-linux-x64-gnu@$VERSION" >"$tmp/pack.log" 2>&1) ||
	{ cat "$tmp/pack.log" >&2; fail "npm pack @chdb/lib-linux-x64-gnu@$VERSION failed"; }
tgz=$(ls "$tmp"/*.tgz)
got=$(sha1sum "$tgz" | cut -d' ' -f1)
[[ $got == "$SHASUM" ]] || fail "the tarball's SHA-1 is $got, not the pinned $SHASUM"
mkdir -p "$tmp/x"
tar -xzf "$tgz" -C "$tmp/x"
found=$(find "$tmp/x" -name libchdb.so -type f | head -n1)
[[ -n $found ]] || fail "the package has no libchdb.so"
rm -rf "$dest"
mkdir -p "$dest"
mv "$found" "$dest/libchdb.so.part"
mv "$dest/libchdb.so.part" "$lib"
echo "cartlift: chDB $VERSION installed: $lib" >&2
echo "$lib"
