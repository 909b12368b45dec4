"""Generation back ends behind one protocol (`base.Engine`): hf (transformers), vllm (in-process) and
vllm-server (a fleet of `vllm serve` servers). `selfloop.runtime` builds the one a config names."""
