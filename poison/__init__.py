"""Cascading-poison testbed: inject biased samples into a teacher's instruction data, distil students, measure.

Run ``python -m poison.run CONFIG``; see README.md.
"""

__version__ = "0.2.0"
