"""selfloop: a daemon that makes a language model improve itself.

Generation, self-judging and LoRA training alternate in iterations; every prompt, sample,
judgment, pair, training step, checkpoint and evaluation is stored in a SQL database.
"""

__version__ = "0.1.0"
