# Benchmark stand-in for Hugging Face `transformers`, written for codi-adapter's bench/convert-7b.js:
# NOT the library. Debian has no package of it and the benchmark runs offline.
#
# llama.cpp's convert_lora_to_gguf.py imports AutoConfig and AutoTokenizer when it loads. With
# `--base <folder>` it asks AutoConfig for the base's hyper-parameters and, when that raises, reads
# the folder's config.json itself: this stand-in raises, so the script takes that path. AutoTokenizer
# is only asked for with an aLoRA invocation string, which the benchmark's adapter has not.


class AutoConfig:
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise OSError("benchmark stand-in: no transformers here; config.json is read instead")


class AutoTokenizer:
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise ValueError("benchmark stand-in: no transformers here, so no tokenizer")
