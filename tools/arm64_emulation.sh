#!/usr/bin/env bash
# Proof on ARM64: run the device side of edgeft on Linux aarch64 under QEMU user-mode emulation on
# this x86_64 machine, from a device package exported on x86, and check that the fine-tuned
# model's test accuracy matches the x86 run within 0.5 points.
#
#   sudo MODEL=tiny tools/arm64_emulation.sh     # CI (.ci/run): a tiny text model, minutes
#   sudo tools/arm64_emulation.sh                # manual: MiniLM, much longer under emulation
#
# Steps (the expensive ones are cached and skipped when already done):
#   1. qemu-user-static, binfmt-support, debootstrap (apt-get, once); aarch64 binfmt enabled
#   2. a Debian bookworm arm64 rootfs with python3 (debootstrap, once)   -> $ROOTFS
#   3. edgeft and its device-side dependencies (plain onnxruntime) for aarch64 CPython 3.11,
#      installed by the host's pip (`--platform ... --target`, aarch64 wheels only: pip itself would
#      take minutes under emulation) into $SITE in the rootfs; redone when sources or constraints change
#   4. x86: edgeft export --device raspberry-pi-5 (a device package: int8 frozen prefix) of the model
#      (MiniLM, or with MODEL=tiny a tiny random-weight BERT whose vocabulary covers the example data)
#   5. x86: train (portable backend) + evaluate on test.csv          (every run: the reference)
#   6. aarch64, emulating the Raspberry Pi 5's Cortex-A76 (QEMU_CPU=cortex-a76: no SVE/SME, which
#      no shipped profile's board has): train (--backend auto, which must pick portable) +
#      evaluate + deploy (the package's raspberry-pi-5 profile) + predict   (every run: the proof)
#   7. summary, with the guest's CPU features read from its auxiliary vector (its /proc/cpuinfo
#      shows the host's); exit 1 when |acc_x86 - acc_aarch64| > MAX_DIFF points
#
# Environment: MODEL (minilm or tiny), ROOTFS (default /var/cache/edgeft-arm64/rootfs), OUT
# (default artifacts/arm64-proof[-tiny]), MIRROR (default http://deb.debian.org/debian), EPOCHS
# (3; tiny: 10), LR (1e-3; tiny: 3e-3), THREADS (2), MAX_DIFF (0.5), QEMU_CPU (cortex-a76),
# FORCE_EXPORT=1 to re-export, HOST_BIN (default .venv/bin).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
MODEL=${MODEL:-minilm}
case "$MODEL" in minilm|tiny) ;; *) echo "MODEL must be minilm or tiny" >&2; exit 2;; esac
ROOTFS=${ROOTFS:-/var/cache/edgeft-arm64/rootfs}
OUT=${OUT:-artifacts/arm64-proof$([ "$MODEL" = tiny ] && echo -tiny)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
EPOCHS=${EPOCHS:-$([ "$MODEL" = tiny ] && echo 10 || echo 3)}
LR=${LR:-$([ "$MODEL" = tiny ] && echo 3e-3 || echo 1e-3)}
QEMU_CPU=${QEMU_CPU:-cortex-a76}
THREADS=${THREADS:-2}
MAX_DIFF=${MAX_DIFF:-0.5}
HOST_BIN=${HOST_BIN:-$REPO/.venv/bin}
DATA=edgeft/examples/smart_home
SITE=/opt/edgeft-site           # inside the rootfs: edgeft and its dependencies for aarch64 (PYTHONPATH)
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
            --include=python3 bookworm "$ROOTFS" "$MIRROR" >&2
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

# arm CMD...: run CMD in the aarch64 chroot, in the repository, with a clean environment
# (EDGEFT_DEVICES: a non-editable install does not ship the repository's devices/ profiles;
# QEMU_CPU must be set inside the env -i, or the guest runs on qemu's default "max" CPU)
arm() {
    chroot "$ROOTFS" /usr/bin/env -i PATH="/usr/bin:/bin" HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" \
        PYTHONPATH="$SITE" EDGEFT_DEVICES=/work/main/devices /bin/sh -c 'cd /work/main && exec "$@"' arm "$@"
}

# --- 3. edgeft for aarch64, installed by the host's pip ------------------------------------------
SRC_HASH=$( (cat pyproject.toml constraints.txt; find edgeft devices -name '*.py' -o -name '*.csv' -o -name '*.txt' -o -name '*.md' -o -name '*.toml' | grep -v __pycache__ | sort | xargs cat) | sha256sum | cut -c1-16)
if [ "$(cat "$ROOTFS$SITE/.edgeft-src-hash" 2>/dev/null)" != "$SRC_HASH" ]; then
    log "pip install edgeft (+ constraints.txt) for aarch64 CPython 3.11 into $SITE"
    t0=$(date +%s)
    WHEELS=$(mktemp -d)
    "$HOST_BIN/python" -m pip wheel -q --no-deps --no-build-isolation . -w "$WHEELS" >&2 2>/dev/null \
        || "$HOST_BIN/python" -m pip wheel -q --no-deps . -w "$WHEELS" >&2
    rm -rf "$ROOTFS$SITE"
    "$HOST_BIN/python" -m pip install -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --implementation cp --python-version 3.11 \
        --abi cp311 --abi abi3 --abi none --target "$ROOTFS$SITE" -c constraints.txt "$WHEELS"/edgeft-*.whl >&2
    rm -rf "$WHEELS"
    echo "$SRC_HASH" > "$ROOTFS$SITE/.edgeft-src-hash"
    echo "pip-install $(( $(date +%s) - t0 ))" >> "$TIMES"
fi
arm python3 -c 'import platform, onnxruntime, numpy; print("aarch64 env:", platform.machine(), "python", platform.python_version(), "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)' 2>/dev/null | tee "$OUT/aarch64-env.txt"
if arm python3 -c 'import onnxruntime.training' 2>/dev/null; then
    echo "unexpected: onnxruntime.training imports on aarch64" >&2; exit 2
fi

# the guest's CPU features, from its auxiliary vector (AT_HWCAP 16, AT_HWCAP2 26)
arm python3 - > "$OUT/aarch64-hwcap.txt" 2>/dev/null <<'PY' || true
import struct
names = {0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 7: "crc32", 8: "atomics", 9: "fphp", 10: "asimdhp",
         12: "asimdrdm", 15: "lrcpc", 20: "asimddp", 22: "sve", 23: "asimdfhm"}
names2 = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}
data = open("/proc/self/auxv", "rb").read()
values = dict(struct.iter_unpack("<QQ", data))
found = [n for bit, n in names.items() if values.get(16, 0) >> bit & 1]
found += [n for bit, n in names2.items() if values.get(26, 0) >> bit & 1]
print("guest CPU features (HWCAP):", " ".join(found))
PY

# --- 4. x86 export: a device package for raspberry-pi-5 ------------------------------------------
ART=$OUT/package
if [ -n "${FORCE_EXPORT:-}" ] || [ ! -e "$ART/manifest.json" ] || [ ! -e "$ART/prefix.onnx" ]; then
    if [ "$MODEL" = tiny ]; then
        log "x86: a tiny text model"
        "$HOST_BIN/python" tools/tiny_text_model.py "$OUT/tiny-model" "$DATA/train.csv" "$DATA/val.csv" "$DATA/test.csv" >/dev/null
        SOURCE=("$OUT/tiny-model" --max-length 32)
    else
        SOURCE=()
    fi
    log "x86: edgeft export --device raspberry-pi-5 ($MODEL, last:1)"
    timed x86-export "$HOST_BIN/edgeft" export "${SOURCE[@]}" --labels "$DATA/labels.txt" --train last:1 \
        --device raspberry-pi-5 --guard-data "$DATA/train.csv" -o "$ART" --force --json > "$OUT/export.json"
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
timed arm-train arm python3 -m edgeft train "$ART" "$DATA/train.csv" "${TRAIN_ARGS[@]}" --backend auto \
    --run-dir "$OUT/run-aarch64" > "$OUT/train-aarch64.json" 2> "$OUT/train-aarch64.log"
log "aarch64 (emulated): evaluate"
timed arm-evaluate arm python3 -m edgeft evaluate "$OUT/run-aarch64" "$DATA/test.csv" --threads "$THREADS" --json \
    > "$OUT/eval-aarch64.json" 2> "$OUT/eval-aarch64.log"
log "aarch64 (emulated): deploy (the package's raspberry-pi-5 profile)"
timed arm-deploy arm python3 -m edgeft deploy "$OUT/run-aarch64" -o "$OUT/bundle-rpi5" --force --json \
    > "$OUT/deploy-aarch64.json" 2> "$OUT/deploy-aarch64.log"
log "aarch64 (emulated): predict"
timed arm-predict arm python3 -m edgeft predict "$OUT/bundle-rpi5" "turn off the lights" "add milk to my shopping list" --json \
    > "$OUT/predict-aarch64.json" 2> "$OUT/predict-aarch64.log"

# --- 7. summary ---------------------------------------------------------------------------------
"$HOST_BIN/python" - "$OUT" "$MAX_DIFF" "$MODEL" <<'PY'
import json, sys, pathlib
out, max_diff = pathlib.Path(sys.argv[1]), float(sys.argv[2])
load = lambda name: json.loads((out / name).read_text())
tx, ta = load("train-x86.json"), load("train-aarch64.json")
ex, ea = load("eval-x86.json"), load("eval-aarch64.json")
dep, pred = load("deploy-aarch64.json"), load("predict-aarch64.json")
times = dict(line.split() for line in (out / "timings.txt").read_text().splitlines() if line.strip())
print()
print("ARM64 proof (QEMU user-mode emulation)", f"model {sys.argv[3]}")
print((out / "aarch64-env.txt").read_text().strip())
hwcap = out / "aarch64-hwcap.txt"
print(hwcap.read_text().strip() if hwcap.is_file() and hwcap.read_text().strip() else "guest CPU features: unknown")
package = load("export.json")
print(f"package raspberry-pi-5: {package['size']['package_mb']} MB ({package['size']['ratio']}x the fp32 model), "
      f"frozen prefix: {package['prefix']['chosen']} ({package['prefix']['recipe_summary']})")
print(f"train backend  x86: {tx['backend']}   aarch64: {ta['backend']}")
print(f"train seconds  x86: {tx['seconds']}   aarch64: {ta['seconds']}   ({ta['steps']} steps, {ta['epochs']} epochs)")
print(f"val accuracy   x86: {tx['best']['accuracy'] * 100:.2f}%   aarch64: {ta['best']['accuracy'] * 100:.2f}%")
ax, aa = ex["accuracy"] * 100, ea["accuracy"] * 100
print(f"test accuracy  x86: {ax:.2f}%   aarch64: {aa:.2f}%   diff: {abs(ax - aa):.2f} points (max {max_diff})")
print(f"test macro-F1  x86: {ex['macro_f1'] * 100:.2f}%   aarch64: {ea['macro_f1'] * 100:.2f}%   loss x86 {ex['loss']:.4f} aarch64 {ea['loss']:.4f}")
fp32, quant = dep["fp32"], dep["bundle_model"]
print(f"deploy raspberry-pi-5: tail {dep['chosen']}; bundle {quant['size_mb']} MB; val accuracy "
      f"fp32 tail {fp32['metrics']['accuracy'] * 100:.2f}% int8 tail {quant['metrics']['accuracy'] * 100:.2f}%")
for p in pred if isinstance(pred, list) else [pred]:
    print(f"predict: {p['input']!r} -> {p['label']} ({p['top'][0]['score']:.3f})")
print("timings (s):", ", ".join(f"{k} {v}" for k, v in times.items()))
if abs(ax - aa) > max_diff:
    print("FAIL: accuracy differs by more than", max_diff, "points")
    sys.exit(1)
print("OK: aarch64 accuracy matches x86")
PY
