#!/usr/bin/env bash
# Run on a GPU machine (the device tool: `run` with carry [".gpu"], after
# scripts/gpu_check_prepare.sh here): build the vendored llama.cpp with CUDA (libllama for
# llama-cpp-python, llama-server, llama-bench), then time the default model's shape twin:
# llama-bench, flashls on the GPU against llama.vscode's way of using llama-server, and
# several users on one llama-server. The twin's text is noise, so only timings mean
# anything: its suggestions never match what is typed and usually run to max_tokens.
# Writes log.txt and the reports under $OUT (8 files at most come back).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
ARCH=${CUDA_ARCH:-90}
LOG=$OUT/log.txt
mkdir -p "$OUT"
step() { echo "=== $(date +%T) $*" | tee -a "$LOG"; }
step start
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$LOG"
nvcc --version 2>&1 | tail -1 | tee -a "$LOG"
mkdir -p /tmp/g && tar -xzf .gpu/llama-src.tar.gz -C /tmp/g
cmake -S /tmp/g/llama.cpp -B /tmp/g/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" > /tmp/g/cmake.log 2>&1 \
  || { tail -30 /tmp/g/cmake.log | tee -a "$LOG"; exit 1; }
step build
SECONDS=0
timeout 420 cmake --build /tmp/g/build --target llama llama-server llama-bench -j "$(nproc)" \
  > /tmp/g/build.log 2>&1 || { tail -40 /tmp/g/build.log | tee -a "$LOG"; exit 1; }
echo "build_s=$SECONDS" | tee -a "$LOG"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl 2>&1 | tail -3 | tee -a "$LOG"
rm -rf /tmp/site/llama_cpp && cp -r .gpu/llama_cpp /tmp/site/llama_cpp
ln -s /tmp/g/build/bin /tmp/site/llama_cpp/lib
export PYTHONPATH=/tmp/site:$PWD
M=/tmp/twin.gguf
python3 scripts/shape_twin.py unpack .gpu/twin.pack "$M"
step llama-bench
timeout 90 /tmp/g/build/bin/llama-bench -m "$M" -ngl 99 -fa 1 -p 512,1300 -n 48 -r 3 -o json \
  > "$OUT/llama-bench.json" 2>>"$LOG"
step llama-server
/tmp/g/build/bin/llama-server -m "$M" -ngl 99 -fa on -np 8 -c 32768 --cache-reuse 256 \
  --port 8012 --metrics --slots > /tmp/g/server.log 2>&1 &
python3 -c "
import time, urllib.request
for _ in range(90):
    try:
        print(urllib.request.urlopen('http://127.0.0.1:8012/health').read()); break
    except OSError:
        time.sleep(1)" 2>&1 | tee -a "$LOG"
files="flashls/service.py flashls/cache.py flashls/postprocess.py flashls/server.py"
step "bench latency: flashls on the GPU, default settings, against llama.vscode's requests"
timeout 200 python3 -m flashls bench latency --files $files --workspace flashls --sites 8 \
  --keystrokes-per-site 6 --mode sync --server-arg=--model=$M --server-arg=--n-gpu-layers=-1 \
  --baseline llama-vscode --llama-server http://127.0.0.1:8012 --out "$OUT/lat" 2>&1 \
  | tail -40 | tee -a "$LOG"
step "bench users on the GPU llama-server"
timeout 200 python3 -m flashls bench users --endpoint http://127.0.0.1:8012 \
  --engine llama-server --users 1,4,8 --files flashls --out "$OUT/users" 2>&1 \
  | tail -30 | tee -a "$LOG"
step done
