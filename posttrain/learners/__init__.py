"""The learner role: one DeepSpeed engine per data-parallel rank, wrapped as a Ray actor.

`learner.Learner` is the plain logic class (forward logprobs, train step, save/load, export);
`learner_group.LearnerGroup` launches one actor per rank and fans calls out; `learner_config`
is the recipe's `learner:` section; `engine_setup` builds the DeepSpeed engine; `batch` and
`micro_batches` describe and split the tensors a step trains on; `checkpoint` saves and restores
a rank. This package knows nothing about rollouts or rewards: it receives finished batches.
"""
