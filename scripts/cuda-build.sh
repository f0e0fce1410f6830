#!/usr/bin/env bash
# Builds probegate with `--features cuda` on a machine with no CUDA toolkit
# and no GPU, from NVIDIA's PyPI wheels (the only registry these machines
# reach). The result runs where an NVIDIA driver for that CUDA version is
# installed; see docs/gpu.md.
#
#   scripts/cuda-build.sh [cargo args…]      # default: build --release --features cuda
#
# CUDA_VERSION (default 13.0) picks the wheels; CUDA_COMPUTE_CAP (default 90,
# H100/H200) the GPU the kernels are compiled for. The toolkit is unpacked
# under $PROBEGATE_CACHE/cuda-$CUDA_VERSION (default ~/.cache/probegate).
set -euo pipefail

ver=${CUDA_VERSION:-13.0}
cache=${PROBEGATE_CACHE:-$HOME/.cache/probegate}
root=$cache/cuda-$ver
# One version of every wheel; nvcc's PTX must not be newer than the driver
# that loads it, so pin the toolkit, not the newest release.
case $ver in
  13.0) wheels="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35" ;;
  *) echo "cuda-build.sh: no wheel list for CUDA $ver (add one beside 13.0)" >&2; exit 2 ;;
esac

if [ ! -x "$root/nvidia/cu13/bin/nvcc" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 -d "$tmp" $wheels
  mkdir -p "$root.part"
  for w in "$tmp"/*.whl; do unzip -q -o "$w" -d "$root.part"; done
  lib=$root.part/nvidia/cu13/lib
  # The wheels ship versioned sonames only; the linker wants the bare names.
  for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "$lib/lib$l.so"; done
  ln -sf libcurand.so.10 "$lib/libcurand.so"
  rm -rf "$root" && mv "$root.part" "$root"
fi
cu=$root/nvidia/cu13

# libcuda belongs to the driver, which no wheel carries. Link against a stub
# that defines every driver entry point cudarc declares; the real library is
# found by the loader where the binary runs.
if [ ! -e "$cu/lib/stubs/libcuda.so" ]; then
  cargo fetch --locked -q
  src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'cudarc-*' | sort | tail -1)
  [ -n "$src" ] || { echo "cuda-build.sh: cudarc's source not found after cargo fetch" >&2; exit 2; }
  mkdir -p "$cu/lib/stubs"
  grep -ohE '\bfn cu[A-Za-z0-9_]+' "$src/src/driver/sys/mod.rs" | awk '{print $2}' | sort -u |
    awk '{print "void " $1 "(void){}"}' > "$cu/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/stubs/libcuda.so.1" "$cu/lib/stubs/cuda_stub.c"
  ln -sf libcuda.so.1 "$cu/lib/stubs/libcuda.so"
fi

export PATH=$cu/bin:$PATH
export CUDA_ROOT=$cu
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$cu/lib:$cu/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
# A target folder of its own: features change candle's build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/cuda-target}
if [ $# -eq 0 ]; then set -- build --release --features cuda; fi
exec cargo "$@"
