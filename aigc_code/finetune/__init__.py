"""LoRA finetuning on one repository: `aigc-code finetune REPO --out DIR` and `aigc-code merge`.

data.py (repository -> filtered, deduplicated, split source files), secrets.py (credential scan),
spans.py (tree-sitter FIM spans), examples.py (FIM/plain examples packed into rows), train.py
(the accelerate/peft loop with atomic checkpoints and resume), evaluate.py (before/after
measurements), report.py, merge.py, cli.py. See docs/finetune.md.
"""
