#!/usr/bin/env bash
# Proof on ARM64 (issue 6, item 4): run the device side of edgeft on Linux aarch64 under QEMU
# user-mode emulation on this x86_64 machine, from artifacts exported on x86, and check that the
# fine-tuned model's test accuracy matches the x86 run within 0.5 points.
#
#   sudo tools/arm64_emulation.sh            # from the repository root, as root (chroot, mounts)
#
# Steps (the expensive ones are cached and skipped when already done):
#   1. qemu-user-static, binfmt-support, debootstrap (apt-get, once); aarch64 binfmt enabled
#   2. a Debian bookworm arm64 rootfs with python3 (debootstrap, once)   -> $ROOTFS
#   3. an aarch64 venv with `pip install -c constraints.txt <copy of this repo>` (plain
#      onnxruntime, via the pyproject markers); redone when the sources or constraints change
#   4. x86: edgeft export MiniLM (--train last:1) for the smart_home example (once)
#   5. x86: train (portable backend) + evaluate on test.csv          (every run: the reference)
#   6. aarch64: train (--backend auto, which must pick portable) + evaluate + deploy for
#      raspberry-pi-5 + predict                                       (every run: the proof)
#   7. summary; exit 1 when |acc_x86 - acc_aarch64| > MAX_DIFF points
#
# Environment: ROOTFS (default /var/cache/edgeft-arm64/rootfs), OUT (default
# artifacts/arm64-proof), MIRROR (default http://deb.debian.org/debian), EPOCHS (3), LR (1e-3),
# THREADS (2), MAX_DIFF (0.5), FORCE_EXPORT=1 to re-export, HOST_PY (default .venv/bin).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
ROOTFS=${ROOTFS:-/var/cache/edgeft-arm64/rootfs}
OUT=${OUT:-artifacts/arm64-proof}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
THREADS=${THREADS:-2}
MAX_DIFF=${MAX_DIFF:-0.5}
HOST_BIN=${HOST_BIN:-$REPO/.venv/bin}
DATA=edgeft/examples/smart_home
ART=$OUT/artifacts
VENV=/opt/edgeft-venv           # inside the rootfs
SRC=/opt/edgeft-src             # inside the rootfs
TIMES=$OUT/timings.txt

[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot and mounts need it)" >&2; exit 2; }
case "$ROOTFS" in "$REPO"/*) echo "ROOTFS must be outside the repository (the repo is bind-mounted into it)" >&2; exit 2;; esac
mkdir -p "$OUT"
: > "$TIMES"

log() { printf '\n== %s\n' "$*" >&2; }
# timed NAME CMD...: run CMD, append "NAME seconds" to $TIMES
timed() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    printf '%s %.1f\n' "$name" "$(echo "$t1 - $t0" | bc)" >> "$TIMES"
}

# --- 1. emulation tools ------------------------------------------------------------------------
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v update-binfmts >/dev/null || ! command -v bc >/dev/null; then
    log "installing qemu-user-static binfmt-support debootstrap"
    apt-get install -y qemu-user-static binfmt-support debootstrap bc >&2
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
if ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    echo "aarch64 binfmt is not enabled (is binfmt_misc mountable here?)" >&2; exit 2
fi

# --- 2. aarch64 rootfs -------------------------------------------------------------------------
if [ ! -e "$ROOTFS/.edgeft-rootfs-done" ]; then
    log "debootstrap arm64 bookworm into $ROOTFS (several minutes under emulation)"
    t0=$(date +%s)
    if [ ! -e "$ROOTFS/debootstrap/debootstrap" ] && [ ! -e "$ROOTFS/usr/bin/python3" ]; then
        mkdir -p "$ROOTFS"
        debootstrap --arch=arm64 --foreign --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOTFS" "$MIRROR" >&2
    fi
    # the binfmt entry has the F flag, but a copy keeps the chroot usable without it
    cp /usr/bin/qemu-aarch64-static "$ROOTFS/usr/bin/"
    if [ -e "$ROOTFS/debootstrap/debootstrap" ]; then
        chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >&2
    fi
    touch "$ROOTFS/.edgeft-rootfs-done"
    echo "rootfs $(( $(date +%s) - t0 ))" >> "$TIMES"
fi

# --- mounts (undone on exit) -------------------------------------------------------------------
MOUNTS=()
cleanup() {
    local i
    for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" || true; done
}
trap cleanup EXIT
bindmount() {  # bindmount SRC DST  (skipped when DST is already a mount point)
    mkdir -p "$2"
    if ! mountpoint -q "$2"; then
        if [ "$1" = proc ]; then mount -t proc proc "$2"; else mount --bind "$1" "$2"; fi
        MOUNTS+=("$2")
    fi
}
bindmount proc "$ROOTFS/proc"
bindmount /dev "$ROOTFS/dev"
# no /sys: with the host's /sys, onnxruntime's cpuinfo (aarch64) crashes under qemu at import
bindmount "$REPO" "$ROOTFS/work/main"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# this machine reaches PyPI through a TLS-inspecting proxy: trust the host's CA bundle
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/host-ca-certificates.crt"

# arm CMD...: run CMD in the aarch64 chroot, in the repository, with a clean environment
# (EDGEFT_DEVICES: a non-editable install does not ship the repository's devices/ profiles)
arm() {
    chroot "$ROOTFS" /usr/bin/env -i PATH="$VENV/bin:/usr/bin:/bin" HOME=/root LANG=C.UTF-8 \
        PIP_CERT=/etc/ssl/host-ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_DEFAULT_TIMEOUT=180 EDGEFT_DEVICES=/work/main/devices /bin/sh -c 'cd /work/main && exec "$@"' arm "$@"
}

# --- 3. aarch64 venv with edgeft installed from a copy of the sources ---------------------------
SRC_HASH=$( (cat pyproject.toml constraints.txt; find edgeft -name '*.py' -o -name '*.csv' -o -name '*.txt' -o -name '*.md' | grep -v __pycache__ | sort | xargs cat) | sha256sum | cut -c1-16)
if [ "$(cat "$ROOTFS$VENV/.edgeft-src-hash" 2>/dev/null)" != "$SRC_HASH" ]; then
    log "pip install edgeft (+ constraints.txt) into the aarch64 venv $VENV"
    t0=$(date +%s)
    rm -rf "$ROOTFS$SRC" && mkdir -p "$ROOTFS$SRC"
    tar --exclude=__pycache__ -cf - pyproject.toml README.md constraints.txt edgeft | tar -xf - -C "$ROOTFS$SRC"
    [ -x "$ROOTFS$VENV/bin/python" ] || arm /usr/bin/python3 -m venv "$VENV"
    arm "$VENV/bin/pip" install -q -c "$SRC/constraints.txt" "$SRC" >&2
    echo "$SRC_HASH" > "$ROOTFS$VENV/.edgeft-src-hash"
    echo "pip-install $(( $(date +%s) - t0 ))" >> "$TIMES"
fi
arm "$VENV/bin/python" -c 'import platform, onnxruntime, numpy; print("aarch64 env:", platform.machine(), "python", platform.python_version(), "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)' 2>/dev/null | tee "$OUT/aarch64-env.txt"
if arm "$VENV/bin/python" -c 'import onnxruntime.training' 2>/dev/null; then
    echo "unexpected: onnxruntime.training imports on aarch64" >&2; exit 2
fi

# --- 4. x86 export ----------------------------------------------------------------------------
if [ -n "${FORCE_EXPORT:-}" ] || [ ! -e "$ART/manifest.json" ] || [ ! -e "$ART/tail_portable_step.onnx" ]; then
    log "x86: edgeft export (MiniLM, last:1)"
    timed x86-export "$HOST_BIN/edgeft" export --labels "$DATA/labels.txt" --train last:1 -o "$ART" --force --json > "$OUT/export.json"
fi

TRAIN_ARGS=(--val "$DATA/val.csv" --epochs "$EPOCHS" --lr "$LR" --threads "$THREADS" --force --json)

# --- 5. x86 reference -------------------------------------------------------------------------
log "x86: train + evaluate"
timed x86-train "$HOST_BIN/edgeft" train "$ART" "$DATA/train.csv" "${TRAIN_ARGS[@]}" --backend portable \
    --run-dir "$OUT/run-x86" > "$OUT/train-x86.json"
timed x86-evaluate "$HOST_BIN/edgeft" evaluate "$OUT/run-x86" "$DATA/test.csv" --backend portable \
    --threads "$THREADS" --json > "$OUT/eval-x86.json"

# --- 6. aarch64 under emulation ----------------------------------------------------------------
log "aarch64 (emulated): train"
timed arm-train arm edgeft train "$ART" "$DATA/train.csv" "${TRAIN_ARGS[@]}" --backend auto \
    --run-dir "$OUT/run-aarch64" > "$OUT/train-aarch64.json" 2> "$OUT/train-aarch64.log"
log "aarch64 (emulated): evaluate"
timed arm-evaluate arm edgeft evaluate "$OUT/run-aarch64" "$DATA/test.csv" --threads "$THREADS" --json \
    > "$OUT/eval-aarch64.json" 2> "$OUT/eval-aarch64.log"
log "aarch64 (emulated): deploy --device raspberry-pi-5"
timed arm-deploy arm edgeft deploy "$OUT/run-aarch64" --device raspberry-pi-5 -o "$OUT/bundle-rpi5" --force --json \
    > "$OUT/deploy-aarch64.json" 2> "$OUT/deploy-aarch64.log"
log "aarch64 (emulated): predict"
timed arm-predict arm edgeft predict "$OUT/bundle-rpi5" "turn off the lights" "add milk to my shopping list" --json \
    > "$OUT/predict-aarch64.json" 2> "$OUT/predict-aarch64.log"

# --- 7. summary ---------------------------------------------------------------------------------
"$HOST_BIN/python" - "$OUT" "$MAX_DIFF" <<'PY'
import json, sys, pathlib
out, max_diff = pathlib.Path(sys.argv[1]), float(sys.argv[2])
load = lambda name: json.loads((out / name).read_text())
tx, ta = load("train-x86.json"), load("train-aarch64.json")
ex, ea = load("eval-x86.json"), load("eval-aarch64.json")
dep, pred = load("deploy-aarch64.json"), load("predict-aarch64.json")
times = dict(line.split() for line in (out / "timings.txt").read_text().splitlines() if line.strip())
print()
print("ARM64 proof (QEMU user-mode emulation)")
print((out / "aarch64-env.txt").read_text().strip())
print(f"train backend  x86: {tx['backend']}   aarch64: {ta['backend']}")
print(f"train seconds  x86: {tx['seconds']}   aarch64: {ta['seconds']}   ({ta['steps']} steps, {ta['epochs']} epochs)")
print(f"val accuracy   x86: {tx['best']['accuracy'] * 100:.2f}%   aarch64: {ta['best']['accuracy'] * 100:.2f}%")
ax, aa = ex["accuracy"] * 100, ea["accuracy"] * 100
print(f"test accuracy  x86: {ax:.2f}%   aarch64: {aa:.2f}%   diff: {abs(ax - aa):.2f} points (max {max_diff})")
print(f"test macro-F1  x86: {ex['macro_f1'] * 100:.2f}%   aarch64: {ea['macro_f1'] * 100:.2f}%   loss x86 {ex['loss']:.4f} aarch64 {ea['loss']:.4f}")
fp32, quant = dep["fp32"], dep["bundle_model"]
print(f"deploy raspberry-pi-5: {dep['chosen']}; {quant['size_mb']} MB of {fp32['size_mb']} MB; "
      f"val accuracy fp32 {fp32['metrics']['accuracy'] * 100:.2f}% int8 {quant['metrics']['accuracy'] * 100:.2f}%")
for p in pred if isinstance(pred, list) else [pred]:
    print(f"predict: {p['input']!r} -> {p['label']} ({p['top'][0]['score']:.3f})")
print("timings (s):", ", ".join(f"{k} {v}" for k, v in times.items()))
if abs(ax - aa) > max_diff:
    print("FAIL: accuracy differs by more than", max_diff, "points")
    sys.exit(1)
print("OK: aarch64 accuracy matches x86")
PY
