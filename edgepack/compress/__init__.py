"""Making a smaller student: width and hidden-size pruning, distillation (data, training, the
choice of depth), making the student a plan needs, and the report a student carries.

May import: plan (the students it proposes), measure (quality, calibration text), model,
device and the root modules; never export, build or bundle.
"""
