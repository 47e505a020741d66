"""The offline learning loop: labels, calibration metrics, evaluation and reports.

The only package that imports scikit-learn and matplotlib; nothing on the request path imports it."""
