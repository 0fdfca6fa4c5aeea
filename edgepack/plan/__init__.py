"""The planner: pure functions from model facts and a device profile to ranked candidates with
their predictions (speed, memory, disk, quality priors), the students a plan may propose, what
would fit when nothing does, and the calibration of speed from this host to the device (the
one module here that reads the host and the cache).

May import: export (its registry, which is data), model, device and the root modules; never
measure, compress, build or bundle. No backend is imported here (`edgepack plan` stays lean).
"""
