"""What the warm interpreter (tests/support/warm.py) imports before it forks: the modules a tiny loop run
loads, so that a forked run starts with them in memory. Importing only: no computation, no thread."""

import peft  # noqa: F401
import torch  # noqa: F401
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
from transformers.models.llama import modeling_llama  # noqa: F401  (the tiny model and SmolLM2 are Llamas)

import selfloop.cli
import selfloop.engines.hf
import selfloop.loop
import selfloop.runner  # noqa: F401

_ = transformers.__version__
