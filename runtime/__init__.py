"""The small layer under `rewards` and `rollout` that both need (DESIGN.md): where a Ray actor may run its work
(`devices`: the GPUs it reserved, the others hidden), a loopback Ray for one machine (`local_ray`), and the
supervised actor pool (`supervised`).

Knows nothing of models, rewards or recipes; imports none of this project's other packages.
"""
