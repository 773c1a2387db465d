#!/bin/sh
# Build dist/SmartPop-<version>-noarch.spk: a plain tar holding INFO, package.tgz, scripts/,
# conf/, WIZARD_UIFILES/ and the two Package Center icons. package.tgz carries the Python
# package, the launcher, the DSM UI files and the pinned runtime libraries (downloaded with
# hash checking from package/requirements.lock), so the NAS needs neither pip nor network.
# Two builds of the same commit produce the same package.tgz bytes.
#
# Environment (all optional):
#   SMARTPOP_BUILD_VERSION  override the version from package/smartpop/__init__.py (test builds)
#   SMARTPOP_DIST           output directory (default: ./dist)
#   SMARTPOP_WHEEL_CACHE    where downloaded wheels are kept (default: ~/.cache/smartpop-wheels)
set -eu
umask 022

ROOT=$(cd "$(dirname "$0")" && pwd -P)
cd "$ROOT"
PYTHON=${PYTHON:-python3}

die() { echo "build.sh: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "python3 is required to build"
command -v tar >/dev/null 2>&1 || die "GNU tar is required to build"

# --- version: one source, package/smartpop/__init__.py ---------------------------------
VERSION=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' package/smartpop/__init__.py)
VERSION=${SMARTPOP_BUILD_VERSION:-$VERSION}
# DSM: "<feature>-<build>", segments numeric, delimiters . - _ only.
echo "$VERSION" | grep -Eq '^[0-9]+(\.[0-9]+)*-[0-9]+$' || die "version '$VERSION' is not DSM-valid (e.g. 1.2.3-0001)"

DIST=${SMARTPOP_DIST:-$ROOT/dist}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/smartpop-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
CACHE=${SMARTPOP_WHEEL_CACHE:-${HOME:-/tmp}/.cache/smartpop-wheels}
mkdir -p "$CACHE" "$DIST"

# Reproducible timestamps: the commit time, else a fixed epoch.
EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
EPOCH=${SOURCE_DATE_EPOCH:-$EPOCH}

# --- 1. every JSON file that ends up in the package must parse ---------------------------
for json in conf/privilege conf/resource ui/config WIZARD_UIFILES/*_uifile*; do
    case "$json" in *.sh) continue ;; esac
    "$PYTHON" -m json.tool "$json" >/dev/null 2>"$WORK/json.err" \
        || die "invalid JSON in $json: $(cat "$WORK/json.err")"
done

# --- 2. runtime libraries, hash-checked --------------------------------------------------
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "build.sh: installing python3-pip (needed to download the pinned wheels)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip >&2
    else
        die "pip is missing: install it (Debian/Ubuntu: apt-get install python3-pip)"
    fi
fi
# Wheels only, except the few pure-Python libraries published as sdists only (pyspf): pip
# checks their hash like a wheel's and reads their metadata; unpack_wheels.py copies their
# module files out of the archive and never installs them.
SDISTS=$("$PYTHON" tools/unpack_wheels.py --sdist-names)
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --no-binary "$SDISTS" --python-version 3.8 --platform any --platform manylinux2014_x86_64 \
    -d "$CACHE" -r package/requirements.lock >&2 \
    || die "could not download the pinned wheels (network, or a hash mismatch)"

# --- 3. stage package.tgz's content ------------------------------------------------------
STAGE=$WORK/stage
mkdir -p "$STAGE/lib"
cp -R package/bin "$STAGE/bin"
cp -R package/smartpop "$STAGE/smartpop"
# A test build with an overridden version must also report that version at runtime.
sed "s/^__version__ = \".*\"$/__version__ = \"$VERSION\"/" package/smartpop/__init__.py > "$STAGE/smartpop/__init__.py"
cp -R ui "$STAGE/ui"
# DSM's web server answers files under ui/ itself (dsmuidir): styles and scripts go there, so a
# page view starts Python once (index.cgi), not once per file. The backend keeps its copy for
# `serve --dev` and for the ?v= fingerprint in the pages.
cp -R package/smartpop/web/static "$STAGE/ui/static"
cp package/requirements.lock "$STAGE/lib/requirements.lock"
"$PYTHON" tools/unpack_wheels.py package/requirements.lock "$CACHE" "$STAGE/lib"
# The one file the root relay task runs, after checking its SHA-256 (docs/RELAY.md "Root task").
RELAY_SHA=$("$PYTHON" tools/relay_bundle.py "$STAGE" "$STAGE/bin/smartpop-relay.py" "$STAGE/lib") \
    || die "could not build the relay bundle"
find "$STAGE" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
find "$STAGE" -type f -exec chmod 0644 {} +
find "$STAGE" -type d -exec chmod 0755 {} +
chmod 0755 "$STAGE/bin/smartpop"
for cgi in "$STAGE"/ui/*.cgi; do [ -e "$cgi" ] && chmod 0755 "$cgi"; done
# The .sc file that conf/resource registers (port-config); postinst rewrites the port.
find "$STAGE" -name '*.json' | while read -r json; do
    "$PYTHON" -m json.tool "$json" >/dev/null || die "invalid JSON in package file $json"
done

SPK=$WORK/spk
mkdir -p "$SPK"
tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$STAGE" -cf - . | gzip -9 -n > "$SPK/package.tgz"

# --- 4. INFO ------------------------------------------------------------------------------
CHECKSUM=$(md5sum "$SPK/package.tgz" | cut -d' ' -f1)
EXTRACTSIZE=$(du -sk "$STAGE" | cut -f1)
APPNAME=$("$PYTHON" -c 'import json,sys; print(next(iter(json.load(open(sys.argv[1]))[".url"])))' ui/config)
cat > "$SPK/INFO" <<INFO
package="SmartPop"
version="$VERSION"
os_min_ver="7.0-40000"
arch="noarch"
displayname="SmartPop"
displayname_ger="SmartPop"
description="Collects your company's mail from the provider (catch-all or per-user mailboxes) into MailPlus, and sends outgoing mail through the provider's SMTP server. No static IP or open port needed."
description_ger="Holt die E-Mails Ihrer Firma beim Provider ab (Sammelpostfach oder einzelne Postfächer) und stellt sie in MailPlus zu; ausgehende Mails gehen über den SMTP-Server des Providers. Ohne feste IP und ohne offenen Port."
maintainer="SmartPop"
dsmuidir="ui"
dsmappname="$APPNAME"
ctl_stop="yes"
precheckstartstop="yes"
install_dep_packages="MailPlus-Server"
extractsize="$EXTRACTSIZE"
checksum="$CHECKSUM"
INFO
cp "$SPK/INFO" "$ROOT/INFO"

# --- 5. the .spk --------------------------------------------------------------------------
cp -R scripts conf WIZARD_UIFILES "$SPK/"
cp ui/images/smartpop-64.png "$SPK/PACKAGE_ICON.PNG"
cp ui/images/smartpop-256.png "$SPK/PACKAGE_ICON_256.PNG"
chmod 0755 "$SPK"/scripts/*
chmod 0644 "$SPK"/conf/* "$SPK"/INFO "$SPK"/PACKAGE_ICON*.PNG "$SPK/package.tgz"
for f in "$SPK"/WIZARD_UIFILES/*; do
    case "$f" in *.sh) chmod 0755 "$f" ;; *) chmod 0644 "$f" ;; esac
done
OUT="$DIST/SmartPop-$VERSION-noarch.spk"
tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$SPK" -cf "$OUT.tmp" INFO package.tgz scripts conf WIZARD_UIFILES PACKAGE_ICON.PNG PACKAGE_ICON_256.PNG
mv "$OUT.tmp" "$OUT"
# The hash the root task's command carries; stated here so an admin can compare it with the
# command the Relay page shows.
echo "relay bundle sha256: $RELAY_SHA" >&2
echo "$OUT"
