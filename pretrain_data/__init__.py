"""Pre-training data for Keye-VL's stages 0-3: synthetic multi-task shards, users' shards, and data hygiene.

`tasks` draws verifiable image-text examples (captions, counting, colour and position questions, grounding,
OCR, interleaved image pairs, short videos) from seeded generators built on `cold_start_data`'s sources;
`shards` writes and reads them as JSONL with image files, the format a user's own shards use too; `hygiene`
removes near-duplicate images (pHash -> MinHash LSH) and anything that overlaps an evaluation set. This package
knows nothing about models or training: the stage kinds in `posttrain.stages.pretrain` read its shards.
"""
