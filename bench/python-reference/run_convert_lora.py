# Runs llama.cpp's convert_lora_to_gguf.py as it is, for codi-adapter's bench/convert-7b.js, under an
# older torch: Debian's python3-torch (1.13) lacks the float8 element types (torch 2.1 and later)
# that the conversion package names in a table when it loads, which would stop it at its import. The
# LoRA path meets no float8 tensor, so the two names get a stand-in value first; nothing else of the
# script is changed.
#
# Usage: python3 run_convert_lora.py <llama.cpp source folder> <convert_lora_to_gguf.py arguments>
# (the folder's gguf-py and this folder's stand-ins/ must be on PYTHONPATH: bench/convert-7b.js does it)
import os
import runpy
import sys

import torch

for name in ("float8_e4m3fn", "float8_e5m2"):
    if not hasattr(torch, name):
        setattr(torch, name, torch.uint8)

source = sys.argv[1]
script = os.path.join(source, "convert_lora_to_gguf.py")
sys.path.insert(0, source)
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
