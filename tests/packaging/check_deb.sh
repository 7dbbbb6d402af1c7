#!/usr/bin/env bash
# The Debian package as CPack builds it (CTest: packaging.deb, label packaging).
#
#   check_deb.sh BUILD_DIR SOURCE_DIR
#
# Builds the .deb from BUILD_DIR into a temp dir and checks what dpkg will see: the files and
# where they go, conffiles, Depends from dpkg-shlibdeps, the maintainer scripts, a stripped
# binary, the systemd unit (systemd-analyze verify, and its security exposure), and that the
# role's sysctls are the package's.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
for tool in cpack dpkg-deb readelf; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

t0=$(date +%s%N)
(cd "$T" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$T/pkg" >/dev/null)
deb=$(ls "$T"/pkg/halb_*.deb)
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

# Files and where they go.
dpkg-deb --contents "$deb" | awk '{print $6}' >"$T/files"
for f in ./usr/sbin/halb ./lib/systemd/system/halb.service ./etc/default/halb \
  ./usr/lib/sysctl.d/60-halb.conf ./usr/share/doc/halb/README.md \
  ./usr/share/doc/halb/configuration.md ./usr/share/doc/halb/operations.md \
  ./usr/share/doc/halb/systemd.md ./usr/share/doc/halb/ansible.md \
  ./usr/share/doc/halb/examples/pair.yaml; do
  grep -qx "$f" "$T/files" || fail "missing $f"
done
grep -v '/$' "$T/files" | grep -vE '^\./(usr|lib|etc/default)/' && fail "files outside /usr, /lib and /etc/default"
dpkg-deb --contents "$deb" | awk '$6 == "./usr/sbin/halb" {print $1, $2}' | grep -qx -- '-rwxr-xr-x root/root' ||
  fail "/usr/sbin/halb is not 0755 root:root"

# Control: every file under /etc is a conffile; Depends comes from the binary's libraries.
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$T" ./conffiles ./control ./postinst ./prerm ./postrm
diff <(grep '^\./etc/' "$T/files" | grep -v '/$' | sed 's#^\.##' | sort) <(sort "$T/conffiles") >/dev/null ||
  fail "conffiles ($(tr '\n' ' ' <"$T/conffiles")) differ from the files under /etc"
depends=$(dpkg-deb --field "$deb" Depends)
echo "Depends: $depends"
grep -q '\badduser\b' <<<"$depends" || fail "Depends lacks adduser (postinst uses it)"
for s in postinst prerm postrm; do
  [[ $(stat -c %a "$T/$s") == 755 ]] || fail "$s is not 0755"
  sh -n "$T/$s" || fail "$s: shell syntax"
  grep -q '@[A-Z_]*@' "$T/$s" && fail "$s has unsubstituted @VARIABLES@"
done
# The unit: the lines the design depends on, then systemd's own checks.
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$T" ./lib/systemd/system/halb.service ./usr/lib/sysctl.d/60-halb.conf ./usr/sbin/halb
unit=$T/lib/systemd/system/halb.service
readelf -S --wide "$T/usr/sbin/halb" | grep -q '\.debug_' && fail "the packaged binary is not stripped"
# Every library the packaged binary needs directly belongs to a package in Depends.
dep_pkgs=$(tr ',' '\n' <<<"$depends" | awk '{print $1}')
for lib in $(readelf -d "$T/usr/sbin/halb" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  path=$(ldd "$T/usr/sbin/halb" | awk -v l="$lib" '$1 == l && $3 ~ /^\// {print $3}')
  [[ -z $path ]] && { fail "$lib does not resolve"; continue; }
  pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(realpath "$path")" 2>/dev/null || true)
  pkg=${pkg%%:*}
  [[ -z $pkg ]] && { fail "no package owns $path"; continue; }
  grep -qxF "$pkg" <<<"$dep_pkgs" || fail "$lib ($pkg) is not in Depends"
done
readelf -S --wide "$build/app/halb" | grep -q '\.debug_' || echo "note: the build's binary has no debug sections either"
for line in 'Type=notify' 'User=halb' 'Restart=on-failure' 'LimitNOFILE=1048576' \
  'ExecStartPre=/usr/sbin/halb check -q -c ${HALB_CONFIG} $HALB_OPTS' \
  'ExecStart=/usr/sbin/halb run -c ${HALB_CONFIG} $HALB_OPTS' \
  'ExecReload=/usr/sbin/halb check -q -c ${HALB_CONFIG} $HALB_OPTS' \
  'ExecReload=/bin/kill -HUP $MAINPID' \
  'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE' \
  'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE' \
  'NoNewPrivileges=yes' 'ProtectSystem=strict' 'PrivateTmp=yes' \
  'ConditionFileNotEmpty=/etc/halb/halb.yaml' 'EnvironmentFile=-/etc/default/halb'; do
  grep -qxF "$line" "$unit" || fail "the unit lacks: $line"
done
grep -q '@[A-Z_]*@' "$unit" && fail "the unit has unsubstituted @VARIABLES@"
if command -v systemd-analyze >/dev/null; then
  # verify checks that the binaries exist: point the unit at the unpacked one.
  sed "s#/usr/sbin/halb#$T/usr/sbin/halb#" "$unit" >"$T/halb.service"
  if out=$(systemd-analyze verify --man=no "$T/halb.service" 2>&1) && [[ -z $out ]]; then
    echo "systemd-analyze verify: clean"
  else
    fail "systemd-analyze verify: $out"
  fi
  exposure=$(systemd-analyze security --offline=true "$T/halb.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for halb.service: \([0-9.]*\).*/\1/p')
  echo "systemd-analyze security: exposure $exposure (0 = locked down, 10 = unprotected)"
  [[ -n $exposure ]] && awk -v e="$exposure" 'BEGIN { exit !(e <= 3.0) }' || fail "exposure $exposure > 3.0"
else
  echo "systemd-analyze not found: unit not verified"
fi

# The role writes the same sysctls as the package ships.
/usr/bin/python3 - "$T/usr/lib/sysctl.d/60-halb.conf" "$src/ansible/roles/halb/defaults/main.yml" <<'EOF' || fail "the role's halb_sysctls differ from packaging/60-halb.conf"
import sys, yaml
pkg = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        k, v = (x.strip() for x in line.split("=", 1))
        pkg[k] = v
role = {k: str(v) for k, v in yaml.safe_load(open(sys.argv[2]))["halb_sysctls"].items()}
print(f"sysctls: package {pkg}")
sys.exit(0 if pkg == role else 1)
EOF

echo "check_deb: $failures failure(s)"
[[ $failures -eq 0 ]]
