"""Reading runs back: the trace index, filters, the terminal view, the local web viewer and the static export.

Everything here only reads what a run wrote (`traces.jsonl`, `metrics.jsonl`, `eval.jsonl`, `done.json`, trace
images); it knows nothing about how the samples were produced and never imports torch, Ray or the trainers.
"""
