#!/usr/bin/env bash
# The one GPU check. On a machine with a CUDA (or Apple MPS) GPU, from the repository root:
#
#     bash benchmarks/gpu_check.sh                 # everything, on the GPU: paste the whole output
#     bash benchmarks/gpu_check.sh --device cpu    # the same steps, small, on the CPU (checks the script)
#
# It names the hardware, runs the tests marked `gpu`, the book's notebooks under nbval (quick
# mode) and benchmarks/speed.py (the original pipeline against the package's, then the package at
# batch 1,024 eager and compiled), and ends with the speed tables. MNIST comes from
# $ALEXNET_TUTORIAL_DATA (or is downloaded). Uses .venv/bin/python when there is one, else
# python3 (or $PYTHON). Exits non-zero when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

device=auto
if [ "${1:-}" = "--device" ]; then device="${2:?--device needs auto, cuda, mps or cpu}"; fi
py="${PYTHON:-}"
if [ -z "$py" ]; then if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
results="${OUT:-$(mktemp -d)}"
failed=()

echo "== hardware"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$py" -c "import sys, torch; from alexnet_tutorial.devices import describe_device, pick_device
print(describe_device(pick_device(sys.argv[1])), '| torch', torch.__version__)" "$device" || exit 2

echo "== tests marked gpu"
if [ "$device" = cpu ]; then export ALEXNET_TUTORIAL_TEST_DEVICE=cpu; fi
"$py" -m pytest tests/test_gpu.py -m gpu -p no:cacheprovider -q -rs || failed+=("gpu tests")

echo "== the book under nbval (quick mode)"
if "$py" -c "import nbval, ipykernel, ipywidgets" 2>/dev/null; then
    notebooks=(book)
    if [ "$device" = cpu ]; then notebooks=(book/02_data.ipynb); fi  # the whole book takes long on a CPU
    ALEXNET_TUTORIAL_QUICK=1 "$py" -m pytest "${notebooks[@]}" -p no:cacheprovider -q || failed+=("book")
else
    echo "skipped: nbval, ipykernel or ipywidgets is not installed for $py"
    failed+=("book (not run)")
fi

echo "== benchmarks/speed.py"
small=()
if [ "$device" = cpu ]; then small=(--smoke); fi
"$py" benchmarks/speed.py --device "$device" "${small[@]}" --json "$results/speed.json" \
    | tee "$results/speed.txt" || failed+=("speed.py")
for extra in "" "--compile"; do
    # shellcheck disable=SC2086
    "$py" benchmarks/speed.py --device "$device" "${small[@]}" --pipelines package --batch-size 1024 $extra \
        | tee -a "$results/speed-batch1024.txt" || failed+=("speed.py --batch-size 1024 $extra")
done

echo "== tables"
cat "$results/speed.txt" "$results/speed-batch1024.txt" 2>/dev/null | grep -v '^  '
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all steps passed"
