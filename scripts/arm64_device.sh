#!/usr/bin/env bash
# shellcheck disable=SC2016 # the sh -c scripts are single-quoted on purpose
# arm64_device.sh - an emulated Raspberry Pi (Debian arm64 user space under qemu-user) reachable
# over ssh on 127.0.0.1, for tests of edgeship's SSH target on a machine without Arm hardware.
#
#   arm64_device.sh build                                   # idempotent, cached outside the repo
#   arm64_device.sh start --device rpi4|rpi5 --port N|auto  # sshd on 127.0.0.1:N, prints N
#   arm64_device.sh env   [--port N | --device rpi4|rpi5]   # what an ssh client needs (KEY=VALUE)
#   arm64_device.sh status
#   arm64_device.sh stop  [--port N | --device D | --owner O]  # default: every instance
#   arm64_device.sh profile RUN [--device rpi4|rpi5] [-- edgeship profile options]
#                                  # build, start, `edgeship profile RUN` against it, stop (make demo-arm)
#
# The device says it is emulated: every instance has /etc/edgeship/emulated.json (device, CPU model,
# emulator), which edgeship's runner reads, so its measurements are recorded as `emulated`, never `device`.
# An instance started with EDGESHIP_ARM64_OWNER=X set is stopped by `stop --owner X` (.ci/run's trap).
#
# Needs root (apt-get, binfmt_misc, chroot, namespaces). Cache: ${EDGESHIP_ARM64_CACHE:-~/.cache/edgeship/arm64}.
# Quiet: one line per step (with its duration) on stderr, full output in $CACHE/logs/. -v streams it.
#
# Environment: EDGESHIP_ARM64_CACHE (cache dir), EDGESHIP_ARM64_BOOTSTRAP (mmdebstrap|debootstrap),
# EDGESHIP_ARM64_MIRROR / _SECURITY_MIRROR (default: the host's apt sources), EDGESHIP_ARM64_VERBOSE=1,
# EDGESHIP_ARM64_START_TIMEOUT (s, default 120), EDGESHIP_ARM64_OVERLAY_SIZE (RAM for what sessions
# write, default 4g), EDGESHIP_ARM64_HOST_PYTHON (host Python with pip, default python3).
set -euo pipefail

# ----------------------------------------------------------------------------- configuration
CACHE=${EDGESHIP_ARM64_CACHE:-$HOME/.cache/edgeship/arm64}
SUITE=bookworm            # Raspberry Pi OS 12 is bookworm too: glibc 2.36, Python 3.11
PYVER=3.11                # the suite's python3; the wheels are chosen for it
BOOTSTRAP=${EDGESHIP_ARM64_BOOTSTRAP:-mmdebstrap}   # or debootstrap (measured ~3x slower)
BASE_REV=1                # bump when the bootstrap step changes in a way the lists below do not show
ROOT_REV=3                # the same for the steps after it (venv, sshd, verify): the base is kept
DEB_PACKAGES=(python3 python3-venv openssh-server)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the device's runtimes at the host's pins (requirements.txt): host and device run the same versions
mapfile -t WHEELS < <(grep -E '^(onnxruntime|openvino|ai-edge-litert|numpy)==' "$REPO/requirements.txt" || true)
DEVICE_PIP=pip==26.3      # downloaded with the wheels, not installed: what `edgeship provision` runs on a device
# every manylinux tag glibc 2.36 satisfies: with only 2014/2_17 pip falls back to ancient releases
PLATFORMS=(manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64
           manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64)
VENV=/opt/v               # inside the root; `python3` in ssh sessions is this venv's
HOST_PACKAGES=(qemu-user-static binfmt-support mmdebstrap arch-test debootstrap openssh-client gcc libc6-dev)
HOST_PYTHON=${EDGESHIP_ARM64_HOST_PYTHON:-python3}  # any host Python with pip, only for `pip download/install --target`

declare -A DEVICE_CPU=([rpi4]=cortex-a72 [rpi5]=cortex-a76)
declare -A DEVICE_MODEL=([rpi4]="Raspberry Pi 4 Model B" [rpi5]="Raspberry Pi 5 Model B")
declare -A DEVICE_MIDR=([rpi4]="0x0 0xd08 3" [rpi5]="0x4 0xd0b 1")  # variant part revision: BCM2711 A72 r0p3, BCM2712 A76 r4p1

VERBOSE=${EDGESHIP_ARM64_VERBOSE:-0}
LOGS=$CACHE/logs
RUN=$CACHE/run
CLIENT=$CACHE/client
TAG="[arm64]"

die() { printf '%s error: %s\n' "$TAG" "$*" >&2; exit 1; }
note() { printf '%s %s\n' "$TAG" "$*" >&2; }
need_root() { [[ $(id -u) == 0 ]] || die "run as root (apt-get, binfmt_misc, chroot and namespaces need it)"; }

# step DESCRIPTION CMD...: run CMD (errexit on) with its output in $LOG; one line with the duration.
step() {
  local what=$1 t0=$EPOCHREALTIME rc
  shift
  printf '%s %-46s' "$TAG" "$what" >&2
  printf '\n===== %s: %s\n' "$(date '+%F %T')" "$what" >>"$LOG"
  set +e
  if ((VERBOSE)); then
    echo >&2
    (set -e; "$@") </dev/null 2>&1 | tee -a "$LOG" >&2
    rc=${PIPESTATUS[0]}
  else
    (set -e; "$@") </dev/null >>"$LOG" 2>&1
    rc=$?
  fi
  set -e
  local dur
  dur=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  if ((rc)); then
    printf ' FAILED after %ss (exit %s); last lines of %s:\n' "$dur" "$rc" "$LOG" >&2
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    exit "$rc"
  fi
  printf ' %7ss\n' "$dur" >&2
}

open_log() {  # append; keep the previous log once it grows past 5 MB
  mkdir -p "$LOGS"; LOG=$LOGS/$1.log
  [[ $(stat -c %s "$LOG" 2>/dev/null || echo 0) -lt 5000000 ]] || mv -f "$LOG" "$LOG.1"
  printf "\n##### %s %s\n" "$(date "+%F %T")" "$0 $*" >>"$LOG"
}

hash_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
base_key() { hash_of "rev=$BASE_REV" "suite=$SUITE" "arch=arm64" "debs=${DEB_PACKAGES[*]}" "tool=$BOOTSTRAP"; }
wheel_key() { hash_of "py=$PYVER" "wheels=${WHEELS[*]} $DEVICE_PIP" "platforms=${PLATFORMS[*]}"; }
root_key() { hash_of "$(base_key)" "$(wheel_key)" "venv=$VENV" "rev=$ROOT_REV"; }
root_dir() { echo "$CACHE/roots/$(root_key)"; }

# Debian mirror: the host's own (first non-security URI in its apt sources), else deb.debian.org
host_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' | grep -v security | head -n1 || true)
  [[ -n $m ]] || m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{ print $2 }' | grep -v security | head -n1 || true)
  echo "${EDGESHIP_ARM64_MIRROR:-${m:-http://deb.debian.org/debian}}"
}
security_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' | grep security | head -n1 || true)
  echo "${EDGESHIP_ARM64_SECURITY_MIRROR:-${m:-http://deb.debian.org/debian-security}}"
}

# Remove a tree this script built. Anything still mounted below it (a killed bootstrap) is
# unmounted first and rm never crosses into another file system, so host /dev, /proc, /sys are safe.
safe_rm() {
  local d
  [[ -e $1 ]] || return 0
  d=$(realpath -- "$1")
  [[ $d == "$CACHE"/* ]] || die "refusing to remove $d (outside $CACHE)"
  awk -v d="$d/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system -- "$d"
}

# ----------------------------------------------------------------------------- host prerequisites
host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  "$HOST_PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  ((${#missing[@]} == 0)) && return 0
  echo "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# qemu-aarch64 registered with binfmt_misc, flag F (interpreter opened at registration, so it
# works inside a chroot without copying qemu into it).
host_binfmt() {
  local f=/proc/sys/fs/binfmt_misc
  mountpoint -q "$f" || mount -t binfmt_misc binfmt_misc "$f"
  [[ -e $f/qemu-aarch64 ]] || update-binfmts --import qemu-aarch64 || true
  grep -qx enabled "$f/qemu-aarch64" 2>/dev/null || update-binfmts --enable qemu-aarch64
  grep -qx enabled "$f/qemu-aarch64" || { echo "qemu-aarch64 binfmt not enabled"; return 1; }
  grep -q '^flags:.*F' "$f/qemu-aarch64" || { echo "qemu-aarch64 binfmt lacks flag F"; return 1; }
}

host_tools_ok() {  # cheap: are the host's tools there? (dpkg-query only when one is missing)
  local c
  for c in qemu-aarch64-static update-binfmts mmdebstrap arch-test debootstrap ssh scp ssh-keygen gcc; do
    command -v "$c" >/dev/null || return 1
  done
  [[ $(gcc -print-file-name=libc.a) == /* ]] || return 1   # libc6-dev: the CPU wrapper is linked statically
  "$HOST_PYTHON" -m pip --version >/dev/null 2>&1
}

host_ready() {
  need_root
  host_tools_ok || step "host packages (apt-get)" host_packages
  if ! { grep -qsx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 && grep -qs '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; }; then
    step "binfmt_misc: qemu-aarch64" host_binfmt
  fi
}

# ----------------------------------------------------------------------------- build
fetch_wheels() {  # $1 = destination (a temp dir)
  local plat=() p
  for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  "$HOST_PYTHON" -m pip download --disable-pip-version-check --no-cache-dir -q --only-binary=:all: "${plat[@]}" \
    --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" -d "$1" "${WHEELS[@]}"
  "$HOST_PYTHON" -m pip download --disable-pip-version-check --no-cache-dir -q --only-binary=:all: --no-deps \
    -d "$1" "$DEVICE_PIP"
  ls "$1"
}

bootstrap_base() {  # $1 = target dir (must not exist yet for debootstrap; empty for mmdebstrap)
  local target=$1 mirror sec inc
  mirror=$(host_mirror); sec=$(security_mirror)
  inc=$(IFS=,; echo "${DEB_PACKAGES[*]}")
  echo "bootstrap=$BOOTSTRAP mirror=$mirror security=$sec"
  case $BOOTSTRAP in
    mmdebstrap)
      # own mount namespace: whatever mmdebstrap mounts vanishes with it, even when it is killed
      unshare --mount --propagation private -- mmdebstrap --mode=root --arch=arm64 --variant=apt \
        --include="$inc" --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$target" "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" \
        "deb $sec $SUITE-security main"
      ;;
    debootstrap)
      unshare --mount --propagation private -- debootstrap --arch=arm64 --variant=minbase --include="$inc" \
        "$SUITE" "$target" "$mirror"
      ;;
    *) echo "EDGESHIP_ARM64_BOOTSTRAP must be mmdebstrap or debootstrap"; return 1 ;;
  esac
  [[ -x $target/usr/bin/python$PYVER ]] || { echo "no python$PYVER in the new root"; return 1; }
}

install_venv() {  # $1 = root, $2 = wheels dir
  local root=$1 wheels=$2 plat=() p site
  # the venv itself is made by the device's own Python (under qemu); without pip, which is slow there
  chroot "$root" /usr/bin/python3 -m venv --without-pip "$VENV"
  # wheels are unpacked by the host's pip (no code of theirs runs at install), .pyc by host CPython $PYVER
  for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  site=$root$VENV/lib/python$PYVER/site-packages
  "$HOST_PYTHON" -m pip install --disable-pip-version-check --no-cache-dir -q --no-index --find-links "$wheels" \
    --only-binary=:all: "${plat[@]}" --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" \
    --target "$site" "${WHEELS[@]}"
  rm -rf "${site:?}/bin"   # console scripts with the host's interpreter in their #! line
}

prepare_sshd() {  # $1 = root
  local root=$1
  [[ -s $root/etc/ssh/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$root/etc/ssh/ssh_host_ed25519_key"
  mkdir -p "$root/run/sshd" "$root/etc/edgeship"
  install -d -m 700 "$root/root/.ssh"
  chmod 700 "$root/root"
  rm -f "$root/etc/motd"
  # sshd is started by this script, never by the root's init scripts
  rm -f "$root/etc/ssh/sshd_not_to_be_run"
}

verify_root() {  # $1 = root: the three runtimes import under qemu (catches a wrong wheel or glibc)
  # HOME in /tmp: onnxruntime and openvino_telemetry leave ~/.cache, ~/intel behind; the root stays as built
  rm -rf "${1:?}/tmp/verify-home"
  chroot "$1" /usr/bin/env -i QEMU_CPU=cortex-a72 HOME=/tmp/verify-home PATH="$VENV/bin:/usr/bin:/bin" "$VENV/bin/python" -c '
import platform, onnxruntime, openvino, ai_edge_litert.interpreter, numpy
print(platform.machine(), "onnxruntime", onnxruntime.__version__, "openvino", openvino.__version__, "numpy", numpy.__version__)'
  find "${1:?}/tmp" -mindepth 1 -delete   # verify-home, openvino_telemetry's /tmp/.ses
}

record_manifest() {  # $1 = root
  local root=$1
  {
    echo "built: $(date -u '+%FT%TZ') base_rev=$BASE_REV root_rev=$ROOT_REV bootstrap=$BOOTSTRAP suite=$SUITE"
    echo "base_key: $(base_key)  wheel_key: $(wheel_key)  root_key: $(root_key)"
    echo "debs (requested): ${DEB_PACKAGES[*]}"
    echo "wheels (requested): ${WHEELS[*]}"
    echo "--- installed debs"
    dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package} ${Version}\n'
    echo "--- venv $VENV"
    for d in "$root$VENV/lib/python$PYVER/site-packages"/*.dist-info; do d=${d##*/}; echo "${d%.dist-info}"; done
  } >"$root/etc/edgeship/manifest.txt"
}

cmd_build() {
  open_log build
  host_ready
  mkdir -p "$CACHE/base" "$CACHE/wheels" "$CACHE/roots"
  exec 8>"$CACHE/.build.lock"
  flock -n 8 || { note "another build holds $CACHE/.build.lock; waiting"; flock 8; }
  local bkey wkey rkey base wheels root tmp
  bkey=$(base_key); wkey=$(wheel_key); rkey=$(root_key)
  base=$CACHE/base/$bkey; wheels=$CACHE/wheels/$wkey; root=$CACHE/roots/$rkey
  if [[ -f $root/etc/edgeship/complete ]]; then
    note "root $rkey is up to date ($root)"
    return 0
  fi
  # we hold the lock: any temp dir is a leftover of a killed build
  local d
  for d in "$CACHE"/base/.tmp-* "$CACHE"/wheels/.tmp-* "$CACHE"/roots/.tmp-*; do
    [[ -e $d ]] && step "remove leftover $(basename "$(dirname "$d")")/$(basename "$d")" safe_rm "$d"
  done
  TMPS=()
  # shellcheck disable=SC2154 # t is the loop variable inside the trap string
  trap 'for t in "${TMPS[@]}"; do safe_rm "$t" || true; done' EXIT
  if [[ ! -f $wheels/.complete ]]; then
    tmp=$CACHE/wheels/.tmp-$wkey-$$; TMPS+=("$tmp"); mkdir -p "$tmp"
    step "download aarch64 wheels (pip)" fetch_wheels "$tmp"
    touch "$tmp/.complete"; safe_rm "$wheels"; mv "$tmp" "$wheels"
  fi
  if [[ ! -f $base/etc/edgeship/base-complete ]]; then
    tmp=$CACHE/base/.tmp-$bkey-$$; TMPS+=("$tmp")
    [[ $BOOTSTRAP == mmdebstrap ]] && mkdir -p "$tmp"
    step "bootstrap Debian $SUITE arm64 ($BOOTSTRAP)" bootstrap_base "$tmp"
    mkdir -p "$tmp/etc/edgeship"; touch "$tmp/etc/edgeship/base-complete"
    safe_rm "$base"; mv "$tmp" "$base"
  fi
  tmp=$CACHE/roots/.tmp-$rkey-$$; TMPS+=("$tmp")
  step "copy base root" cp -a --reflink=auto "$base" "$tmp"
  rm -f "$tmp/etc/edgeship/base-complete"
  step "venv $VENV + wheels (host pip --target)" install_venv "$tmp" "$wheels"
  step "sshd: host key, dirs" prepare_sshd "$tmp"
  step "verify: import runtimes under qemu" verify_root "$tmp"
  record_manifest "$tmp"
  touch "$tmp/etc/edgeship/complete"
  mv "$tmp" "$root"   # atomic: a root without etc/edgeship/complete is never used
  TMPS=()
  # older roots nobody runs and other wheel sets are removed (disk); older bases stay (slow to remake)
  for d in "$CACHE"/wheels/*; do
    [[ $d == "$wheels" || ! -d $d ]] || step "remove old wheels $(basename "$d")" safe_rm "$d"
  done
  for d in "$CACHE"/roots/*; do
    [[ $d == "$root" || ! -d $d ]] && continue
    if ! grep -qsx "$d" "$RUN"/*.root 2>/dev/null; then step "remove old root $(basename "$d")" safe_rm "$d"; fi
  done
  note "ready: $root ($(du -sh --one-file-system "$root" | cut -f1))"
}

# ----------------------------------------------------------------------------- start / stop
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { "$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

ssh_opts() {  # $1 = port: the options of `env`, as an array in SSH_OPTS
  SSH_OPTS=(-F /dev/null -p "$1" -i "$CLIENT/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
            -o UserKnownHostsFile="$CLIENT/known_hosts" -o GlobalKnownHostsFile=/dev/null
            -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o LogLevel=ERROR)
}

# /proc/cpuinfo for the device: qemu 7.2 shows the x86 host's, so each instance gets its own,
# with the Features the emulated CPU really has (read from AT_HWCAP/AT_HWCAP2 under that CPU).
HWCAP_PY='
import ctypes
g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong
H1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg".split()
H2 = "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16".split()
h1, h2 = g(16), g(26)
print(" ".join([n for i, n in enumerate(H1) if h1 >> i & 1] + [n for i, n in enumerate(H2) if h2 >> i & 1]))
'
write_cpuinfo() {  # $1 root $2 device $3 cpu $4 out file
  local feats n i
  feats=$(chroot "$1" /usr/bin/env -i QEMU_CPU="$3" /usr/bin/python3 -c "$HWCAP_PY")
  n=$(nproc)
  local midr; read -ra midr <<<"${DEVICE_MIDR[$2]}"
  {
    for ((i = 0; i < n; i++)); do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$feats"
      printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "${midr[@]}"
    done
    printf 'Model\t\t: %s (emulated: qemu-user -cpu %s)\n' "${DEVICE_MODEL[$2]}" "$3"
  } >"$4"
}

midr_el1() {  # MIDR_EL1 of the device's core, as Linux prints it in sysfs
  local m; read -ra m <<<"${DEVICE_MIDR[$1]}"
  printf '0x%016x\n' $(((0x41 << 24) | (m[0] << 20) | (0xf << 16) | (m[1] << 4) | m[2]))
}

client_key() {
  mkdir -p "$CLIENT"; chmod 700 "$CLIENT"
  [[ -s $CLIENT/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C edgeship-arm64-client -f "$CLIENT/id_ed25519"
  touch "$CLIENT/known_hosts"
}

# The CPU model is pinned per instance, for every process, whatever its environment: each
# instance runs in its own user namespace with its own binfmt_misc (Linux >= 6.7), where aarch64
# ELF files are handed to a tiny static wrapper that sets QEMU_CPU and execs qemu. (sshd's
# SetEnv QEMU_CPU alone would be lost by `env -i` or subprocess(env={}): qemu then emulates
# "max", with SVE/SME, i8mm, bf16 - no Pi has those.)
WRAPPER_C='/* binfmt_misc interpreter for aarch64 ELF: qemu-user with a fixed CPU model (arm64_device.sh).
   Flag P: the kernel calls it as  wrapper <path of the binary> <original argv[0]> <args...>  */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc;
    setenv("QEMU_CPU", EDGESHIP_CPU, 1);
    argv[0] = "aarch64-binfmt-P"; /* Debian qemu: a name ending in -binfmt-P means the argv above */
    execv("/run/edgeship/qemu-aarch64-binfmt-P", argv); /* inside the chroot: a bind of the host qemu */
    perror("arm64_device.sh qemu wrapper: exec /run/edgeship/qemu-aarch64-binfmt-P");
    return 127;
}'
cpu_wrapper() {  # $1 = cpu -> path of the (cached) static wrapper for it
  local out; out=$CACHE/bin/qemu-aarch64-$1-$(hash_of "$WRAPPER_C")
  if [[ ! -x $out ]]; then
    mkdir -p "$CACHE/bin"
    printf '%s\n' "$WRAPPER_C" | gcc -x c -static -Os -s -DEDGESHIP_CPU="\"$1\"" -o "$out.tmp" - && mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# Launched detached, in new user, PID, mount and UTS namespaces: sshd is PID 1 there, so killing the
# outer `unshare` (--kill-child) ends sshd and every session process at once. The mounts exist only in
# there: a fresh /proc with the device's cpuinfo over it, /dev/pts, tmpfs /tmp, /dev/shm and
# /run/edgeship (the namespace's binfmt_misc and the host's qemu). The user namespace maps every
# uid/gid to itself (written by the parent: newuidmap would need /etc/subuid entries).
INNER='set -e
lower=$1 host=$2 conf=$3 cpuinfo=$4 wrapper=$5 ncpu=$6 midr=$7 mnt=$8 marker=$9
hostname "$host"
# the cached root is the read-only lower layer; what sessions write lives in RAM and is gone at stop
mount -t tmpfs -o mode=755,size=${EDGESHIP_ARM64_OVERLAY_SIZE:-4g} tmpfs "$mnt"
mkdir "$mnt/upper" "$mnt/work" "$mnt/root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$mnt/upper,workdir=$mnt/work,userxattr" "$mnt/root"
root=$mnt/root
# the device says it is emulated (edgeship records its measurements as `emulated`, never `device`)
printf "%s\n" "$marker" >"$root/etc/edgeship/emulated.json"
# device nodes do not work through a mount made in a user namespace: /dev is a bind of the
# /dev of the cached root (null, zero, random, urandom, tty...), on the host file system
mount --bind "$lower/dev" "$root/dev"
mount -t proc proc "$root/proc"
mount --bind -o ro "$cpuinfo" "$root/proc/cpuinfo"
mount -t tmpfs -o mode=1777,size=2g tmpfs "$root/tmp"
mkdir -p "$root/dev/pts" "$root/dev/shm" "$root/run/edgeship"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
[ -e "$root/dev/ptmx" ] || ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755,size=1m tmpfs "$root/run/edgeship"
mkdir "$root/run/edgeship/binfmt"
: >"$root/run/edgeship/qemu-aarch64-binfmt-P"
mount --bind -o ro /usr/bin/qemu-aarch64-static "$root/run/edgeship/qemu-aarch64-binfmt-P"
if mount -t binfmt_misc binfmt_misc "$root/run/edgeship/binfmt" 2>/dev/null; then
  printf ":qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:%s:FP\n" "$wrapper" >"$root/run/edgeship/binfmt/register"
  grep -q "^interpreter $wrapper\$" "$root/run/edgeship/binfmt/qemu-aarch64"
else  # Linux < 6.7: the host-wide qemu-aarch64 entry runs everything; QEMU_CPU then comes from SetEnv only
  echo "arm64_device: no binfmt_misc in a user namespace; CPU model through sshd SetEnv only" >&2
fi
# /sys: only the CPU list and topology (onnxruntime/openvino read them; no x86 sysfs leaks in)
mount -t tmpfs -o mode=755,size=1m tmpfs "$root/sys"
d=$root/sys/devices/system/cpu; mkdir -p "$d"
range=0; [ "$ncpu" -gt 1 ] && range="0-$((ncpu - 1))"
for f in possible present online; do echo "$range" >"$d/$f"; done
echo 255 >"$d/kernel_max"
i=0
while [ "$i" -lt "$ncpu" ]; do
  t=$d/cpu$i/topology; mkdir -p "$t" "$d/cpu$i/regs/identification"
  echo "$i" >"$t/core_id"; echo 0 >"$t/physical_package_id"; echo 0 >"$t/cluster_id"
  echo "$i" >"$t/thread_siblings_list"; echo "$i" >"$t/core_cpus_list"
  echo "$range" >"$t/core_siblings_list"; echo "$range" >"$t/package_cpus_list"; echo "$range" >"$t/cluster_cpus_list"
  one=$(printf %x $((1 << i))); all=$(printf %x $(((1 << ncpu) - 1)))  # hwloc wants the masks
  echo "$one" >"$t/thread_siblings"; echo "$one" >"$t/core_cpus"
  echo "$all" >"$t/core_siblings"; echo "$all" >"$t/package_cpus"; echo "$all" >"$t/cluster_cpus"
  echo "$midr" >"$d/cpu$i/regs/identification/midr_el1"   # oneDNN (OpenVINO) reads it
  echo 0x0000000000000000 >"$d/cpu$i/regs/identification/revidr_el1"
  i=$((i + 1))
done
mount -o remount,ro "$root/sys"
exec chroot "$root" /usr/sbin/sshd -D -e -f "$conf"'

cmd_start() {
  local device="" port="" cpu=""
  while (($#)); do
    case $1 in
      --device) device=${2:-}; shift 2 ;;
      --port) port=${2:-}; shift 2 ;;
      --cpu) cpu=${2:-}; shift 2 ;;   # override the device's CPU model (qemu-aarch64 -cpu help)
      *) die "start: unknown argument $1" ;;
    esac
  done
  [[ -n $device && -n ${DEVICE_CPU[$device]:-} ]] || die "start: --device rpi4|rpi5 is required"
  [[ $port == auto || $port =~ ^[0-9]+$ ]] || die "start: --port N|auto is required"
  cpu=${cpu:-${DEVICE_CPU[$device]}}
  open_log "start-$device"
  host_ready
  local root; root=$(root_dir)
  [[ -f $root/etc/edgeship/complete ]] || die "no built root for the current package lists; run: $0 build"
  mkdir -p "$RUN"
  exec 9>"$CACHE/.run.lock"; flock 9
  [[ $port == auto ]] && port=$(free_port)
  if [[ -f $RUN/$port.pid ]] && pid_alive "$port"; then die "an instance already runs on port $port (stop it first)"; fi
  port_open "$port" && die "port $port on 127.0.0.1 is in use by another program"
  clear_state "$port"
  client_key
  # client key -> the root's authorized_keys (once)
  local pub; pub=$(cat "$CLIENT/id_ed25519.pub")
  grep -qsxF "$pub" "$root/root/.ssh/authorized_keys" || { echo "$pub" >>"$root/root/.ssh/authorized_keys"; }
  chmod 600 "$root/root/.ssh/authorized_keys"
  local conf=/etc/edgeship/sshd-$port.conf cpuinfo=$RUN/$port.cpuinfo
  cat >"$root$conf" <<EOF
# generated by arm64_device.sh: $device ($cpu) on 127.0.0.1:$port
Port $port
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 64:30:128
MaxSessions 64
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
# sshd gives sessions a clean environment: this is how every process they start gets the CPU model
SetEnv QEMU_CPU=$cpu EDGESHIP_EMULATED_DEVICE=$device PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin
EOF
  step "device cpuinfo ($cpu)" write_cpuinfo "$root" "$device" "$cpu" "$cpuinfo"
  mkdir -p "$root/run/sshd"
  local wrapper; wrapper=$(cpu_wrapper "$cpu") || die "cannot build the qemu CPU wrapper (gcc, libc6-dev)"
  local go=$RUN/$port.go mnt=$RUN/$port.mnt
  rm -f "$go"; mkfifo -m 600 "$go"
  mkdir -p "$mnt"
  local t0=$EPOCHREALTIME
  printf '%s %-46s' "$TAG" "sshd $device ($cpu) on 127.0.0.1:$port" >&2
  (
    # the daemon keeps no descriptor of ours (lock files, a caller's pipes that would never see EOF)
    for fd in "/proc/$BASHPID/fd"/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    # two steps: `unshare --user` waits (fifo) for the uid/gid maps, and only then the inner unshare
    # makes the other namespaces and forks with --kill-child. (A process that gains its mapped root
    # at an exec loses PR_SET_PDEATHSIG, so --kill-child must come after the maps exist.)
    exec env -i QEMU_CPU="$cpu" PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      EDGESHIP_ARM64_OVERLAY_SIZE="${EDGESHIP_ARM64_OVERLAY_SIZE:-4g}" \
      setsid unshare --user -- /bin/sh -c 'read -r _ <"$1"; shift
        exec unshare --pid --fork --kill-child --mount --uts --propagation private -- /bin/sh -c "$@"' \
      sh "$go" "$INNER" sh "$root" "$device-emu" "$conf" "$cpuinfo" "$wrapper" "$(nproc)" "$(midr_el1 "$device")" "$mnt" \
      "$(marker_json "$device" "$cpu")"
  ) </dev/null >>"$RUN/$port.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$RUN/$port.pid"; echo "$device" >"$RUN/$port.device"; echo "$cpu" >"$RUN/$port.cpu"
  echo "$root" >"$RUN/$port.root"; echo "${EDGESHIP_ARM64_OWNER:-}" >"$RUN/$port.owner"
  # identity uid/gid maps for the new user namespace, then let the inner script go on
  local i ours; ours=$(readlink /proc/self/ns/user)
  for ((i = 0; i < 500; i++)); do
    [[ $(readlink "/proc/$pid/ns/user" 2>/dev/null) != "$ours" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  if ! { echo "0 0 4294967295" >"/proc/$pid/uid_map" && echo "0 0 4294967295" >"/proc/$pid/gid_map" &&
         timeout 10 sh -c 'echo go >"$1"' sh "$go"; } 2>>"$RUN/$port.log"; then
    printf ' FAILED: could not set up the user namespace; %s:\n' "$RUN/$port.log" >&2
    tail -n 20 "$RUN/$port.log" | sed 's/^/    /' >&2
    kill -KILL "$pid" 2>/dev/null || true; clear_state "$port"; exit 1
  fi
  rm -f "$go"
  # known_hosts for this port (the host key is the root's, the same on every port)
  local kh=$CLIENT/known_hosts
  { grep -vF "[127.0.0.1]:$port " "$kh" || true; echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")"; } >"$kh.new"
  mv "$kh.new" "$kh"
  # ready = a real session runs (sshd under qemu takes a while to accept the first one)
  ssh_opts "$port"
  local deadline=$((SECONDS + ${EDGESHIP_ARM64_START_TIMEOUT:-120})) out=""
  # `env -i env` is an aarch64 program started with an empty environment: QEMU_CPU in its output
  # can only come from the namespace's binfmt wrapper, i.e. the CPU model is pinned for every process
  until out=$(ssh "${SSH_OPTS[@]}" root@127.0.0.1 'echo "$(uname -m) $QEMU_CPU $(env -i /usr/bin/env)"' 2>>"$RUN/$port.log"); do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf ' FAILED: sshd exited; %s:\n' "$RUN/$port.log" >&2; tail -n 20 "$RUN/$port.log" | sed 's/^/    /' >&2
      clear_state "$port"; exit 1
    fi
    ((SECONDS < deadline)) || { printf ' FAILED: no ssh session within the timeout\n' >&2; cmd_stop --port "$port" >/dev/null 2>&1 || true; exit 1; }
    sleep 0.5
  done
  local pin
  case $out in
    "aarch64 $cpu QEMU_CPU=$cpu") pin="binfmt (every process)" ;;
    "aarch64 $cpu ") pin="SetEnv only (a process started with an empty environment gets qemu's 'max' CPU)" ;;
    *) printf ' FAILED: session reports %q\n' "$out" >&2; cmd_stop --port "$port"; exit 1 ;;
  esac
  echo "$pin" >"$RUN/$port.pin"
  printf ' %7ss\n' "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')" >&2
  [[ $pin == binfmt* ]] || note "warning: CPU model pinned by $pin"
  echo "$port"
}

marker_json() {  # $1 device $2 cpu: /etc/edgeship/emulated.json of an instance
  local qemu; qemu=$(qemu-aarch64-static --version | head -n1 | awk '{ print $3 }')
  printf '{"device": "%s", "cpu": "%s", "emulator": "qemu-user %s (TCG)", "model": "%s"}' "$1" "$2" "$qemu" \
    "${DEVICE_MODEL[$1]}"
}

clear_state() {  # $1 = port: the instance's files on the host (its .mnt dir is empty out here)
  rm -f "$RUN/$1".{pid,device,cpu,root,cpuinfo,go,pin,owner}
  rmdir "$RUN/$1.mnt" 2>/dev/null || true
}

# an instance is ours while its pid is the `unshare` we started for that port
pid_alive() {
  local pid; pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [[ -r /proc/$pid/cmdline ]] && tr '\0\n' '  ' <"/proc/$pid/cmdline" | grep -q "unshare .*/etc/edgeship/sshd-$1.conf"
}

ports_matching() {  # [--port N | --device D | --owner O] -> ports of known instances
  local want_port="" want_dev="" want_owner="" f p
  while (($#)); do
    case $1 in
      --port) want_port=${2:-}; shift 2 ;;
      --device) want_dev=${2:-}; shift 2 ;;
      --owner) want_owner=${2:-}; [[ -n $want_owner ]] || die "--owner needs a value"; shift 2 ;;
      *) die "unknown argument $1" ;;
    esac
  done
  for f in "$RUN"/*.pid; do
    [[ -e $f ]] || continue
    p=$(basename "$f" .pid)
    [[ -n $want_port && $p != "$want_port" ]] && continue
    [[ -n $want_dev && $(cat "$RUN/$p.device" 2>/dev/null) != "$want_dev" ]] && continue
    [[ -n $want_owner && $(cat "$RUN/$p.owner" 2>/dev/null) != "$want_owner" ]] && continue
    echo "$p"
  done
}

cmd_stop() {
  mkdir -p "$RUN"
  local p pid n=0 i
  for p in $(ports_matching "$@"); do
    if pid_alive "$p"; then
      pid=$(cat "$RUN/$p.pid")
      # SIGKILL to the PID namespace's init (sshd) ends every process in it; then the outer unshare
      # shellcheck disable=SC2046 # one pid per word
      kill -KILL $(cat "/proc/$pid/task/"*/children 2>/dev/null) 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do port_open "$p" || break; sleep 0.1; done
      note "stopped $(cat "$RUN/$p.device" 2>/dev/null) on port $p"
      n=$((n + 1))
    fi
    clear_state "$p"
    [[ -f $CLIENT/known_hosts ]] && { grep -vF "[127.0.0.1]:$p " "$CLIENT/known_hosts" >"$CLIENT/known_hosts.new" || true; mv "$CLIENT/known_hosts.new" "$CLIENT/known_hosts"; }
  done
  ((n)) || note "nothing running${1:+ for $*}"
}

cmd_status() {
  local root p state
  root=$(root_dir)
  if [[ -f $root/etc/edgeship/complete ]]; then
    echo "root: built $(root_key) $root ($(du -sh --one-file-system "$root" | cut -f1))"
  else
    echo "root: not built for the current package lists (key $(root_key)); run: $0 build"
  fi
  for p in $(ports_matching); do
    pid_alive "$p" && state=running || state="dead (stale state)"
    echo "instance: port=$p device=$(cat "$RUN/$p.device") cpu=$(cat "$RUN/$p.cpu") pid=$(cat "$RUN/$p.pid") $state, CPU pinned by $(cat "$RUN/$p.pin" 2>/dev/null || echo '?')"
  done
}

cmd_env() {
  local ports p
  ports=$(ports_matching "$@")
  [[ -n $ports ]] || die "env: no running instance${1:+ for $*} (start one first)"
  [[ $(wc -w <<<"$ports") == 1 ]] || die "env: several instances match (${ports//$'\n'/ }); give --port N"
  p=$ports
  pid_alive "$p" || die "env: the instance on port $p is not running"
  ssh_opts "$p"
  printf 'EDGESHIP_ARM64_DEVICE=%q\n' "$(cat "$RUN/$p.device")"
  printf 'EDGESHIP_ARM64_CPU=%q\n' "$(cat "$RUN/$p.cpu")"
  printf 'EDGESHIP_ARM64_HOST=127.0.0.1\nEDGESHIP_ARM64_USER=root\nEDGESHIP_ARM64_PORT=%s\n' "$p"
  printf 'EDGESHIP_ARM64_IDENTITY=%q\n' "$CLIENT/id_ed25519"
  printf 'EDGESHIP_ARM64_KNOWN_HOSTS=%q\n' "$CLIENT/known_hosts"
  printf 'EDGESHIP_ARM64_PYTHON=%q\n' "$VENV/bin/python"
  printf 'EDGESHIP_ARM64_ROOT=%q\n' "$(cat "$RUN/$p.root")"
  printf 'EDGESHIP_ARM64_SSH_OPTS=%q\n' "${SSH_OPTS[*]}"
  local scp=("${SSH_OPTS[@]}"); scp[2]=-P   # scp spells the port -P (its -p keeps times)
  printf 'EDGESHIP_ARM64_SCP_OPTS=%q\n' "${scp[*]}"
  printf 'EDGESHIP_ARM64_WHEELS=%q\n' "$CACHE/wheels/$(wheel_key)"
}

# What `edgeship profile` needs to reach an instance (its `python3` is the root's venv)
edgeship_ssh_args() {  # $1 = port -> EDGESHIP_ARGS
  EDGESHIP_ARGS=(--ssh root@127.0.0.1 --ssh-port "$1" --ssh-identity "$CLIENT/id_ed25519" --ssh-config /dev/null
                 --ssh-option "UserKnownHostsFile=$CLIENT/known_hosts" --ssh-option GlobalKnownHostsFile=/dev/null
                 --ssh-option IdentitiesOnly=yes --connect-timeout 30)
}

cmd_profile() {  # RUN [--device D] [-- options of edgeship profile]
  local run="" device=rpi4 extra=() port
  while (($#)); do
    case $1 in
      --device) device=${2:-}; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      -*) die "profile: unknown option $1 (edgeship's own options go after --)" ;;
      *) [[ -z $run ]] || die "profile: give one run directory"; run=$1; shift ;;
    esac
  done
  [[ -n $run ]] || die "profile: give a run directory (e.g. runs/fashion_mnist)"
  [[ -n ${DEVICE_CPU[$device]:-} ]] || die "profile: --device rpi4|rpi5"
  local edgeship=${EDGESHIP:-$REPO/.venv/bin/edgeship}
  [[ -x $edgeship ]] || die "no edgeship at $edgeship (run make setup, or set EDGESHIP=path/to/edgeship)"
  (cmd_build)
  export EDGESHIP_ARM64_OWNER=profile-$$
  port=$(cmd_start --device "$device" --port auto)
  # shellcheck disable=SC2064 # the port is known now
  trap "cmd_stop --port $port >/dev/null 2>&1 || true" EXIT
  edgeship_ssh_args "$port"
  note "edgeship profile $run on the emulated $device (port $port): measurements are recorded as emulated"
  "$edgeship" profile "$run" "${EDGESHIP_ARGS[@]}" "${extra[@]}"
}

usage() { sed -n '3,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

main() {
  ((${#WHEELS[@]} == 4)) || die "could not read the 4 runtime pins from $REPO/requirements.txt"
  local cmd=${1:-}
  [[ -n $cmd ]] || { usage; exit 2; }
  shift
  if [[ ${1:-} == -v ]]; then VERBOSE=1; shift; fi
  case $cmd in
    build) cmd_build "$@" ;;
    start) cmd_start "$@" ;;
    stop) need_root; cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    profile) need_root; cmd_profile "$@" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}
main "$@"
