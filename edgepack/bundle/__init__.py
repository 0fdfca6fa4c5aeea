"""The bundle: the atomic writer and the safe reader, the typed manifest, what the device
installs (requirements and wheelhouse), report.html, `edgepack verify`, and the build side's
door to the on-device kit (targets/, shipped as edgepack/targets).

May import: device (the profile a bundle is checked against) and the root modules.
"""
