# Sourced by the device scripts after they set JC (the unpacked binary): puts cuBLAS, cuRAND and
# cudart on LD_LIBRARY_PATH and checks that the binary resolves every library.
# cuBLAS, cuRAND, cudart from the machine's Python packages (CUDA 13 wheels put them in
# nvidia/cu13/lib), else a toolkit under /usr/local; libcuda.so.1 comes with the driver.
libdirs=()
for py in python3 /opt/torch/.venv/bin/python3; do
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || continue
  for d in "$site"/nvidia/cu13/lib "$site"/nvidia/*/lib; do [[ -d $d ]] && libdirs+=("$d"); done
done
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [[ -d $d ]] && libdirs+=("$d"); done
[[ -n ${LD_LIBRARY_PATH:-} ]] && libdirs+=("$LD_LIBRARY_PATH")
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ldd "$JC" | grep 'not found'; then
  echo "the binary is missing libraries (above)"; exit 1
fi
