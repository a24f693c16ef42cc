"""Keye-VL's text protocol, without torch: the chat modes (`chat`: suffixes, tags, parsing, rendering with vision
placeholders) and the grounding format (`grounding`: boxes and points in 0-1000 coordinates).

It is its own package so that the processes that only read and write text, reward workers above all, import
it without loading torch and transformers: `import keye_vl` registers the model with the Auto classes, which
loads both (seconds and hundreds of MB per reward worker). Nothing here imports outside the standard library.
"""
