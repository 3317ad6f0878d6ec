# Benchmark stand-in for the `safetensors` package (see torch.py), for codi-adapter's
# bench/convert-7b.js: NOT the library.
