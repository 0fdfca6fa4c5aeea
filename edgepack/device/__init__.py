"""The device: profiles (hardware facts and budgets, one schema), `targets --detect` for this
machine, and the peak figures of hardware the profiles name.

May import: the root modules only.
"""
