"""Override lists shared by the tests and the benchmarks (one home, so they cannot drift)."""

# A GAN small enough for a few seconds per run on one torch thread (tiny built-in data, 8^3 crops).
GAN_TINY: list[str] = [
    "data.builtin=tiny",
    "data.crop=[8,8,8]",
    "model.g.chan_base=8",
    "model.g.chan_min=4",
    "model.g.chan_max=8",
    "model.d.chan_base=8",
    "model.d.chan_min=4",
    "model.d.chan_max=8",
    "model.d.n_blocks=1",
    "train.batch_size=2",
    "train.n_critic=2",
]
