#!/usr/bin/env bash
# make image-engine-test: the release image in a real engine. podman loads
# the release tarball and shows the expected user, entrypoint, labels and
# created time; the tarball's index holds linux/amd64 and linux/arm64; then
# the image's binary runs, in a container if the engine can start one, and
# in any case from the root filesystem podman exports, as uid 65532.
# Skips, saying so, where podman is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v podman >/dev/null; then
	echo "SKIP image-engine-test: podman is not installed (Debian: apt-get install -y podman)"
	exit 0
fi
VERSION=${VERSION:-v0.1.0}
work=$(mktemp -d)
name=sds-bridge:$VERSION
list=sds-bridge-engine-test-$$
ctr=sds-bridge-engine-test-$$
cleanup() {
	podman rm -f "$ctr" >/dev/null 2>&1 || true
	podman manifest rm "$list" >/dev/null 2>&1 || true
	podman rmi -f "$name" ${loaded:-} >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

make --no-print-directory release VERSION="$VERSION" DIST="$work/dist" >"$work/release.log" 2>&1 ||
	{ cat "$work/release.log"; fail "make release"; }
tarball=$work/dist/sds-bridge_${VERSION}_image.tar
revision=$(git rev-parse HEAD)
created=$(TZ=UTC git log -1 --date=format-local:'%Y-%m-%dT%H:%M:%SZ' --format=%cd)

echo "== podman load -i $(basename "$tarball")"
podman load -i "$tarball"
loaded=$(podman image inspect --format '{{.Id}}' "$name")

# want FORMAT VALUE IMAGE: podman image inspect shows VALUE for FORMAT.
want() {
	got=$(podman image inspect --format "$1" "$3")
	[ "$got" = "$2" ] || fail "podman image inspect --format '$1' $3 = '$got', want '$2'"
	echo "ok   $1 = $got"
}
check_config() {
	want '{{.Config.User}}' 65532:65532 "$1"
	want '{{json .Config.Entrypoint}}' '["/sds-bridge"]' "$1"
	want '{{json .Config.Cmd}}' '["run"]' "$1"
	want '{{.Os}}/{{.Architecture}}' "linux/$2" "$1"
	want '{{.Created.UTC.Format "2006-01-02T15:04:05Z"}}' "$created" "$1"
	for l in "licenses=Apache-2.0" "version=$VERSION" "revision=$revision" "title=sds-bridge"; do
		want "{{index .Labels \"org.opencontainers.image.${l%%=*}\"}}" "${l#*=}" "$1"
	done
}
echo "== podman image inspect $name"
check_config "$name" amd64

echo "== the index: podman manifest add --all, podman manifest inspect"
podman manifest create "$list" >/dev/null
podman manifest add --all "$list" "oci-archive:$tarball" >/dev/null
platforms=$(podman manifest inspect "$list" | grep -o '"architecture": "[a-z0-9]*"' | sort | tr '\n' ' ')
echo "$platforms"
[ "$platforms" = '"architecture": "amd64" "architecture": "arm64" ' ] || fail "index platforms: $platforms"

echo "== podman run --rm $name version"
if out=$(podman run --rm "$name" version 2>&1); then
	echo "$out"
	case $out in "sds-bridge $VERSION ("*) ;; *) fail "podman run printed: $out" ;; esac
else
	echo "podman run failed; what podman said:"
	echo "$out" | sed 's/^/    /'
	echo "(running containers is not possible here; the binary runs from the exported root filesystem instead)"
fi

echo "== podman create + podman export, then chroot --userspec=65532:65532"
podman create --name "$ctr" "$name" >/dev/null
mkdir "$work/rootfs"
podman export "$ctr" | tar -x -C "$work/rootfs"
ls -ln "$work/rootfs" "$work/rootfs/etc"
out=$(chroot --userspec=65532:65532 "$work/rootfs" /sds-bridge version)
echo "$out"
case $out in "sds-bridge $VERSION ("*dev*) fail "version says dev: $out" ;; "sds-bridge $VERSION ("*) ;; *) fail "version printed: $out" ;; esac

echo "== podman pull --platform linux/arm64 oci-archive:$(basename "$tarball")"
arm=$(podman pull -q --platform linux/arm64 "oci-archive:$tarball")
check_config "$arm" arm64
podman rmi -f "$arm" >/dev/null
echo "PASS image-engine-test"
