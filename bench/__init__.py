"""The benchmark harness of the SFT job service: ``python -m bench`` (``make bench``); run.py says what it measures.

Two of its files are scripts the harness starts in processes of their own and imports nothing from: bare_sft.py
(bare TRL) and limit_sft.py (a plain PyTorch + PEFT loop). export.py is a script of its own (export costs).
tiny_model.py and ray_head.py are shared with the test suite, which imports them from here.
"""
