"""The names of what a run directory holds (lmtool/checkpoint.py writes and reads them).

A leaf module, so that what only needs the names (lmtool/outputs.py, deciding whether a
directory is a run) does not import the checkpoint code, which imports the tokenizer,
which checks its outputs: a cycle."""

FORMAT = "lmtool-run"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAINER = "trainer"
METRICS = "metrics.jsonl"
STATE = "state.json"
OPTIMIZER = "optimizer.safetensors"
TENSORS = "tensors.safetensors"  # TrainerState.tensors
