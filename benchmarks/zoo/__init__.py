"""The corpus of real pretrained models (``models.py``), their data (``make_data.py``) and recipes (``*.yaml``).

A regular package: it must win over ``benchmarks/zoo.py`` (the script that runs the corpus) when
``benchmarks.zoo.models`` is imported."""
