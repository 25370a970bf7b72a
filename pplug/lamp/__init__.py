"""Load and score: official LaMP files (`data`, `download`), the official metrics (`metrics`), shift slices of a
split (`slices`) and the statistics that compare methods on the same questions (`stats`).

May import: core.
"""
