"""Files copied unmodified from llama.cpp (MIT, see LICENSE and VENDORED.md).

Not imported by strongroom: ``convert_lora_to_gguf.py`` runs as a child process
(``serving.backends.gguf_lora``) with this directory first on its ``sys.path``, so its own
``conversion`` and ``gguf`` packages are used there and nowhere else.
"""
