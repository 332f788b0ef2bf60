"""Recording with the training frameworks people use: a PyTorch Lightning callback (``lightning``) and a
Hugging Face ``Trainer`` callback (``huggingface``). Each is an optional extra (``actprobe[lightning]``,
``actprobe[hf]``); importing one without its framework raises an ``ImportError`` that names the extra.

May import: ``engine`` (the ``Probe`` they drive) and the base. Imports nothing here, so that one
integration loads without the other's framework.
"""
